"""Local files: image grids, single images and ``metrics.jsonl``."""

from sdcallbacks.outputs.grid import make_grid
from sdcallbacks.outputs.writer import OutputWriter, image_id, read_metrics

__all__ = ["OutputWriter", "image_id", "make_grid", "read_metrics"]
