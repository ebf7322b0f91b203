"""``kid``: Kernel Inception Distance between the validation images and a reference folder, computed by
torchmetrics' ``KernelInceptionDistance`` (its unbiased polynomial-kernel MMD estimator and defaults:
100 subsets of 1000, degree 3, gamma 1/d, coef 1) on CLIP image embeddings by default.

``subset_size`` is capped at the smaller set (torchmetrics raises otherwise); with a handful of
validation images KID is noisy, which ``kid/std`` (the spread over subsets) shows. Subsets are drawn
under a fixed seed, so the same images give the same KID. Lower is better; ``kid`` can be slightly
negative (the estimator is unbiased).
"""

from __future__ import annotations

import logging
from typing import ClassVar

from torchmetrics.image.kid import KernelInceptionDistance

from sdcallbacks.config.metrics import KidConfig
from sdcallbacks.metrics.backbones.clip import ClipBackbone
from sdcallbacks.metrics.base import ImageBatch, SetMetric
from sdcallbacks.metrics.distribution.features import on_features, seeded
from sdcallbacks.metrics.registry import register_metric

logger = logging.getLogger("sdcallbacks")


@register_metric
class Kid(SetMetric):
    name = "kid"
    higher_is_better = False
    config_class = KidConfig
    extra_keys: ClassVar[dict[str, bool]] = {"std": False}
    config: KidConfig

    def load(self) -> None:
        self.clip = self.pool.get(ClipBackbone(self.config.clip, self.device, self.config.batch_size))
        self.references = self.pool.references.features(self.clip, self.config.references).double()

    def compute(self, batch: ImageBatch) -> dict[str, float | None]:
        cfg = self.config
        generated = batch.features.get(self.clip).double()
        subset_size = min(cfg.subset_size, len(generated), len(self.references))
        if subset_size < 2:
            logger.warning("sdcallbacks: kid needs at least 2 images on each side; got %d", subset_size)
            return {self.name: None, f"{self.name}/std": None}
        kid = on_features(
            KernelInceptionDistance,
            generated.shape[1],
            subsets=cfg.subsets,
            subset_size=subset_size,
            degree=cfg.degree,
            gamma=cfg.gamma,
            coef=cfg.coef,
        )
        kid.update(self.references, real=True)
        kid.update(generated, real=False)
        mean, std = seeded(cfg.seed, kid.compute)
        return {self.name: float(mean), f"{self.name}/std": float(std)}
