"""TensorBoard: scalars through the tracker, one image per prompt through its ``SummaryWriter``."""

from __future__ import annotations

import numpy as np

from sdcallbacks.trackers.base import TrackerAdapter, ValidationLog


class TensorBoardAdapter(TrackerAdapter):
    def log_validation(self, log: ValidationLog) -> None:
        self.log_scalars(log.scalars, log.step)
        for name, grid in log.prompt_grids.items():
            array = np.asarray(grid.convert("RGB"))
            self.tracker.writer.add_image(f"{log.prefix}/images/{name}", array, log.step, dataformats="HWC")
        self.tracker.writer.flush()
