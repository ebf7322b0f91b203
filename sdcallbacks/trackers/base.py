"""What one validation hands to the trackers, and the adapter every tracker kind implements.

accelerate's trackers agree on scalars (``tracker.log(values, step=step)``) and on nothing else: W&B wants
``wandb.Image`` objects, TensorBoard ``add_image``, MLflow drops non-numbers. So each kind gets an adapter,
chosen by ``tracker.name``; kinds without one get scalars only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from sdcallbacks.aggregation.records import ImageRecord


@dataclass
class ValidationLog:
    """One validation of one variant, as logged."""

    step: int
    prefix: str  # "val", or "val/ema" for the EMA weights
    scalars: dict[str, float]
    prompt_grids: dict[str, Image.Image] = field(default_factory=dict)  # prompt name -> row of its seeds
    records: list[ImageRecord] = field(default_factory=list)
    images: list[Image.Image] = field(default_factory=list)
    score_keys: list[str] = field(default_factory=list)  # per-image score columns, fixed for the run


class TrackerAdapter:
    """Scalars only; subclasses add images, tables, summaries and artifacts where the tracker has them."""

    def __init__(self, tracker: Any):
        self.tracker = tracker
        self.name: str = getattr(tracker, "name", type(tracker).__name__)

    def setup(self, monitor: str | None, mode: str) -> None:
        """Called once, before the first log."""

    def log_scalars(self, values: dict[str, float], step: int) -> None:
        self.tracker.log(values, step=step)

    def log_validation(self, log: ValidationLog) -> None:
        self.log_scalars(log.scalars, log.step)

    def set_summary(self, values: dict[str, Any]) -> None:
        """Run-level values (best score and step, stopping reason)."""

    def log_checkpoint(self, path: str, step: int, score: float, monitor: str) -> None:
        """A new best checkpoint (only where the tracker stores files and the user asked for it)."""

    def finish(self) -> None:
        """Training ended; only for runs the callback created itself."""
