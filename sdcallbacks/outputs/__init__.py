"""Local files: image grids, single images and ``metrics.jsonl``."""

from sdcallbacks.outputs.grid import make_grid
from sdcallbacks.outputs.writer import OutputWriter, read_metrics

__all__ = ["OutputWriter", "make_grid", "read_metrics"]
