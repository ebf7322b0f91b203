"""Helpers shared by the tests: a metric whose scores move with the weights, and starting a callback."""

from __future__ import annotations

import numpy as np

from sdcallbacks.config import MetricConfig
from sdcallbacks.metrics.base import ImageMetric


class MeanBrightness(ImageMetric):
    name = "brightness"
    higher_is_better = True
    config_class = MetricConfig

    def load(self) -> None:
        pass

    def compute(self, batch):
        return {
            self.name: [
                float(np.asarray(im.convert("L"), dtype=np.float64).mean() / 255) for im in batch.images
            ]
        }


def start(callback, modules, step: int = 0):
    """``on_train_start`` with every module of a :class:`TrainingModules`."""
    return callback.on_train_start(**vars(modules), global_step=step)
