"""Trackers: scalars and images to accelerate's trackers (W&B, TensorBoard, ...)."""

from sdcallbacks.trackers.accelerate_trackers import TrackerLogger

__all__ = ["TrackerLogger"]
