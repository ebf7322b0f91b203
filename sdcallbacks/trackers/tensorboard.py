"""TensorBoard: scalars through the tracker, one image per prompt through its ``SummaryWriter``.

The tracker is accelerate's ``tensorboard`` tracker, or, for ``sdcallbacks evaluate``/``watch`` and loops
without one, a :class:`TensorBoardWriter` of the callback's own (``trackers.tensorboard_dir``): point it
at the trainer's logging folder and the validation curves sit beside its loss.

The callback's config goes to the HParams dashboard of the same run (keys ``sdcallbacks/<section>/<key>``),
with the monitored key as its metric, so runs compare by their validation settings and best value.
accelerate's ``init_trackers(config=...)`` writes the script's own hyperparameters to a session of their own
(a time-named subfolder); the two sessions sit side by side.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from sdcallbacks.trackers.base import TrackerAdapter, ValidationLog

logger = logging.getLogger("sdcallbacks")


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


def hparam_values(config: dict[str, Any]) -> dict[str, Any]:
    """Flat config as HParams values: numbers, strings and booleans as they are, the rest as JSON."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        name = f"sdcallbacks/{key}"
        out[name] = value if isinstance(value, (bool, int, float, str)) else json.dumps(value)
    return out


class TensorBoardAdapter(TrackerAdapter):
    def __init__(self, tracker: Any, owns_writer: bool = False, run_config: dict[str, Any] | None = None):
        super().__init__(tracker)
        self.owns_writer = owns_writer
        self.run_config = run_config or {}

    def setup(self, monitor: str | None, mode: str) -> None:
        if not self.run_config:
            return
        try:
            self._write_hparams(monitor)
        except Exception as err:  # an extra: scalars and images go on without it
            logger.warning(
                "sdcallbacks: the config was not written to TensorBoard's HParams (%s: %s); scalars and "
                "images are logged as usual",
                type(err).__name__,
                err,
            )

    def _write_hparams(self, monitor: str | None) -> None:
        from torch.utils.tensorboard.summary import hparams

        metrics = {monitor: float("nan")} if monitor else {}  # names only: values are the run's own scalars
        writer = self.tracker.writer._get_file_writer()  # the run's own folder, not add_hparams' subfolder
        for summary in hparams(hparam_values(self.run_config), metrics):
            writer.add_summary(summary)
        self.tracker.writer.flush()

    def log_validation(self, log: ValidationLog) -> None:
        self.log_scalars(log.scalars, log.step)
        for name, grid in log.prompt_grids.items():
            array = np.asarray(grid.convert("RGB"))
            self.tracker.writer.add_image(f"{log.prefix}/images/{name}", array, log.step, dataformats="HWC")
        self.tracker.writer.flush()

    def finish(self) -> None:
        if self.owns_writer:
            self.tracker.writer.close()
