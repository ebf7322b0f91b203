"""Logging to the accelerator's trackers: scalars to all of them, image grids where supported.

Trackers exist only on the main process. A tracker that raises (no API key, no network, a version
quirk) gets one warning and is skipped from then on; training and the local files are unaffected.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from PIL import Image

logger = logging.getLogger("sdcallbacks")


class TrackerLogger:
    def __init__(self, accelerator: Any = None):
        self.accelerator = accelerator
        self._broken: set[str] = set()

    def _trackers(self) -> list[Any]:
        if self.accelerator is None or not self.accelerator.is_main_process:
            return []
        return [t for t in getattr(self.accelerator, "trackers", []) if t.name not in self._broken]

    def _guard(self, tracker: Any, what: str, fn, *args, **kwargs) -> None:
        try:
            fn(*args, **kwargs)
        except Exception as err:  # a tracker must never stop training
            self._broken.add(tracker.name)
            logger.warning(
                "sdcallbacks: tracker %r failed to log %s (%s: %s); it is skipped from now on, "
                "local files are still written",
                tracker.name,
                what,
                type(err).__name__,
                err,
            )

    def log_scalars(self, values: dict[str, float], step: int) -> None:
        for tracker in self._trackers():
            self._guard(tracker, "scalars", tracker.log, values, step=step)

    def log_images(self, images: dict[str, Image.Image], step: int) -> None:
        for tracker in self._trackers():
            if tracker.name == "wandb":
                import wandb

                payload = {key: wandb.Image(image) for key, image in images.items()}
                self._guard(tracker, "images", tracker.log, payload, step=step)
            elif tracker.name == "tensorboard":
                for key, image in images.items():
                    array = np.asarray(image.convert("RGB"))
                    self._guard(
                        tracker, "images", tracker.writer.add_image, key, array, step, dataformats="HWC"
                    )
