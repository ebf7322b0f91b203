"""Fans each validation out to the trackers, and keeps a failing tracker from touching training.

Trackers come from ``accelerator.trackers`` (which exist on the main process only) and, if asked for,
a W&B run (``trackers.wandb.create_run``) and a TensorBoard writer (``trackers.tensorboard_dir``) the
callback creates itself. A tracker that raises (no API key, no network, a version quirk)
gets one warning and is skipped from then on; local files are written regardless. A tracker that accelerate
dropped because its package is missing (silently, unless none is left) is reported once with the
``pip install`` that brings it back (see :mod:`sdcallbacks.trackers.packages`).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import Any

from sdcallbacks.config.schema import TrackersConfig
from sdcallbacks.trackers.base import TrackerAdapter, ValidationLog
from sdcallbacks.trackers.mlflow import MlflowAdapter
from sdcallbacks.trackers.packages import (
    TRACKER_PACKAGES,
    available_trackers,
    install_hint,
    missing_trackers,
    requested_trackers,
)
from sdcallbacks.trackers.tensorboard import TensorBoardAdapter, TensorBoardWriter
from sdcallbacks.trackers.wandb import WandbAdapter, create_run

logger = logging.getLogger("sdcallbacks")


def flatten(mapping: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested config as ``a/b/c`` keys (W&B config keys must not contain dots)."""
    out: dict[str, Any] = {}
    for key, value in mapping.items():
        name = f"{prefix}/{key}" if prefix else str(key)
        if isinstance(value, dict):
            out.update(flatten(value, name))
        else:
            out[name] = value
    return out


class TrackerLogger:
    def __init__(
        self,
        accelerator: Any = None,
        config: TrackersConfig | None = None,
        monitor: str | None = None,
        mode: str = "max",
        run_config: dict[str, Any] | None = None,
        directory: str = ".",
    ):
        self.accelerator = accelerator
        self.config = config or TrackersConfig()
        self.monitor = monitor
        self.mode = mode
        self.run_config = run_config or {}
        self.directory = directory
        self._adapters: list[TrackerAdapter] | None = None

    @property
    def _is_main(self) -> bool:
        return self.accelerator is None or self.accelerator.is_main_process

    def adapters(self) -> list[TrackerAdapter]:
        if not self._is_main:
            return []
        if self._adapters is None:
            self._adapters = []
            trackers = getattr(self.accelerator, "trackers", None) or []
            self._report_missing_packages([tracker.name for tracker in trackers])
            for tracker in trackers:
                if tracker.name == "wandb":
                    self._adapters.append(WandbAdapter(tracker.tracker, self.config.wandb))
                elif tracker.name == "tensorboard":
                    self._adapters.append(TensorBoardAdapter(tracker, run_config=self.run_config))
                elif tracker.name == "mlflow":
                    self._adapters.append(MlflowAdapter(tracker))
                else:
                    self._adapters.append(TrackerAdapter(tracker))
            self._create_wandb_run()
            self._create_tensorboard_writer()
            for adapter in list(self._adapters):
                self._guard(adapter, "setup", adapter.setup, self.monitor, self.mode)
        return self._adapters

    def _report_missing_packages(self, present: list[str]) -> None:
        self._missing_reported = False
        if self.accelerator is None:
            return
        missing = missing_trackers(requested_trackers(sys.argv), present)
        if missing:
            logger.warning(
                "sdcallbacks: the command line asks for tracker %s but accelerate left it out, its package "
                "is not installed; install %s. Logging to the other trackers and local files",
                ", ".join(missing),
                install_hint(missing),
            )
            self._missing_reported = True

    def _create_wandb_run(self) -> None:
        assert self._adapters is not None
        if any(a.name == "wandb" for a in self._adapters):
            return
        if not self.config.wandb.create_run:
            if not self._adapters and not self._missing_reported:
                # accelerate drops a requested tracker whose package is missing without an error.
                absent = sorted(set(TRACKER_PACKAGES) - available_trackers()) if self.accelerator else []
                logger.warning(
                    "sdcallbacks: the accelerator has no trackers (init_trackers not called, or the package "
                    "of every log_with tracker is missing%s); logging to local files only",
                    f"; not installed here: {install_hint(absent)}" if absent else "",
                )
            return
        try:
            run = create_run(self.config.wandb, self.directory, self.run_config)
        except Exception as err:  # UsageError (no API key), CommError (no network): training goes on
            logger.warning(
                "sdcallbacks: could not start a W&B run (%s: %s); local files are still written",
                type(err).__name__,
                err,
            )
            return
        self._adapters.append(WandbAdapter(run, self.config.wandb, owns_run=True))

    def _create_tensorboard_writer(self) -> None:
        assert self._adapters is not None
        folder = self.config.tensorboard_dir
        if folder is None or any(a.name == "tensorboard" for a in self._adapters):
            return
        try:
            writer = TensorBoardWriter(folder)
        except ImportError as err:
            logger.warning(
                "sdcallbacks: trackers.tensorboard_dir is set but TensorBoard is not installed (%s; pip "
                "install tensorboard); local files are still written",
                err,
            )
            return
        self._adapters.append(TensorBoardAdapter(writer, owns_writer=True, run_config=self.run_config))

    def _guard(self, adapter: TrackerAdapter, what: str, fn: Callable[..., Any], *args: Any) -> None:
        try:
            fn(*args)
        except Exception as err:  # a tracker must never stop training
            if self._adapters is not None and adapter in self._adapters:
                self._adapters.remove(adapter)
            logger.warning(
                "sdcallbacks: tracker %r failed (%s: %s: %s); it is skipped from now on, local files are "
                "still written",
                adapter.name,
                what,
                type(err).__name__,
                err,
            )

    def _each(self, what: str, method: str, *args: Any) -> None:
        for adapter in list(self.adapters()):
            self._guard(adapter, what, getattr(adapter, method), *args)

    def log_scalars(self, values: dict[str, float], step: int) -> None:
        self._each("scalars", "log_scalars", values, step)

    def log_validation(self, log: ValidationLog) -> None:
        self._each("validation", "log_validation", log)

    def set_summary(self, values: dict[str, Any]) -> None:
        self._each("summary", "set_summary", values)

    def log_checkpoint(self, path: str, step: int, score: float, monitor: str) -> None:
        self._each("checkpoint", "log_checkpoint", path, step, score, monitor)

    def finish(self) -> None:
        self._each("finish", "finish")
