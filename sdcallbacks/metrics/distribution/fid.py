"""``fid``: Fréchet Inception Distance through torchmetrics' ``FrechetInceptionDistance`` on
torch-fidelity's Inception v3 pool features (2048-d), against a reference folder. For users who have
the Inception weights (``weights``). FID is badly biased below a few thousand images: with a validation
set of dozens, compare it between steps of one run, never with published numbers. Lower is better.
A distance cannot be negative; the matrix square root's rounding can make a set compared with itself come
out slightly below 0 (about -1e-7 on large sets, -1e-3 with fewer images than the 2048 feature dimensions),
which is reported as 0."""

from __future__ import annotations

import logging

import torch

from sdcallbacks.config.metrics import FidConfig
from sdcallbacks.metrics.backbones.inception import InceptionNet
from sdcallbacks.metrics.base import ImageBatch, SetMetric
from sdcallbacks.metrics.distribution.features import on_features
from sdcallbacks.metrics.registry import register_metric

logger = logging.getLogger("sdcallbacks")


@register_metric
class Fid(SetMetric):
    name = "fid"
    higher_is_better = False
    config_class = FidConfig
    config: FidConfig

    def load(self) -> None:
        cfg = self.config
        self.net = self.pool.get(InceptionNet("2048", cfg.weights, self.device, cfg.batch_size))
        self.references = self.pool.references.features(self.net, cfg.references)

    def set_features(self, batch: ImageBatch) -> torch.Tensor | None:
        generated = batch.features.get(self.net)
        if min(len(generated), len(self.references)) < 2:
            logger.warning("sdcallbacks: fid needs at least 2 images on each side")
            return None
        return generated

    def on_features(self, generated: torch.Tensor) -> dict[str, float | None]:
        from torchmetrics.image.fid import FrechetInceptionDistance

        fid = on_features(FrechetInceptionDistance, generated.shape[1])
        fid.update(self.references, real=True)
        fid.update(generated, real=False)
        return {self.name: max(float(fid.compute()), 0.0)}
