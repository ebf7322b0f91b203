"""A tiny image metric for tests that need scores which move with the weights: mean pixel value in [0, 1]."""

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
