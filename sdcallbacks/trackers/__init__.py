"""Trackers: each validation to W&B, TensorBoard and every other accelerate tracker."""

from sdcallbacks.trackers.base import TrackerAdapter, ValidationLog
from sdcallbacks.trackers.logger import TrackerLogger
from sdcallbacks.trackers.tensorboard import TensorBoardAdapter
from sdcallbacks.trackers.wandb import WandbAdapter

__all__ = ["TensorBoardAdapter", "TrackerAdapter", "TrackerLogger", "ValidationLog", "WandbAdapter"]
