"""TensorBoard: scalars through the tracker, one image per prompt through its ``SummaryWriter``.

The tracker is accelerate's ``tensorboard`` tracker, or, for ``sdcallbacks evaluate``/``watch`` and loops
without one, a :class:`TensorBoardWriter` of the callback's own (``trackers.tensorboard_dir``): point it
at the trainer's logging folder and the validation curves sit beside its loss.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sdcallbacks.trackers.base import TrackerAdapter, ValidationLog


class TensorBoardWriter:
    """accelerate's tracker protocol (``name``, ``log``, ``writer``) over a ``SummaryWriter`` of our own."""

    name = "tensorboard"

    def __init__(self, log_dir: Path | str):
        from torch.utils.tensorboard import SummaryWriter  # needs the tensorboard package

        self.writer = SummaryWriter(log_dir=str(log_dir))

    def log(self, values: dict[str, float], step: int | None = None) -> None:
        for key, value in values.items():
            self.writer.add_scalar(key, value, global_step=step)
        self.writer.flush()


class TensorBoardAdapter(TrackerAdapter):
    def __init__(self, tracker, owns_writer: bool = False):
        super().__init__(tracker)
        self.owns_writer = owns_writer

    def log_validation(self, log: ValidationLog) -> None:
        self.log_scalars(log.scalars, log.step)
        for name, grid in log.prompt_grids.items():
            array = np.asarray(grid.convert("RGB"))
            self.tracker.writer.add_image(f"{log.prefix}/images/{name}", array, log.step, dataformats="HWC")
        self.tracker.writer.flush()

    def finish(self) -> None:
        if self.owns_writer:
            self.tracker.writer.close()
