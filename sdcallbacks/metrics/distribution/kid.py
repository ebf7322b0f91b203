"""``kid``: Kernel Inception Distance between the validation images and a reference folder, computed by
torchmetrics' unbiased polynomial-kernel MMD (``poly_mmd``) over random subsets, as its
``KernelInceptionDistance`` does (defaults: 100 subsets of 1000, degree 3, gamma 1/d, coef 1), on CLIP
image embeddings by default. The subsets are drawn from a private seeded generator (the global one is
training's), in torchmetrics' order, so the value equals ``KernelInceptionDistance`` after
``torch.manual_seed(seed)``.

``subset_size`` is capped at the smaller set (torchmetrics raises otherwise); with a handful of
validation images KID is noisy, which ``kid/std`` (the spread over subsets) shows. Subsets are drawn
under a fixed seed, so the same images give the same KID. Lower is better; ``kid`` can be slightly
negative (the estimator is unbiased).
"""

from __future__ import annotations

import logging
from typing import ClassVar

import torch
from torchmetrics.image.kid import poly_mmd

from sdcallbacks.config.metrics import KidConfig
from sdcallbacks.metrics.backbones.clip import ClipBackbone
from sdcallbacks.metrics.base import ImageBatch, SetMetric
from sdcallbacks.metrics.registry import register_metric
from sdcallbacks.sampling.rng import seeded_generator

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

    def set_features(self, batch: ImageBatch) -> torch.Tensor | None:
        generated = batch.features.get(self.clip).double()
        if min(len(generated), len(self.references)) < 2:
            logger.warning("sdcallbacks: kid needs at least 2 images on each side; got %d", len(generated))
            return None
        return generated

    def on_features(self, generated: torch.Tensor) -> dict[str, float | None]:
        cfg = self.config
        subset_size = min(cfg.subset_size, len(generated), len(self.references))
        generator = seeded_generator(cfg.seed)
        scores = []
        for _ in range(cfg.subsets):
            real = self.references[torch.randperm(len(self.references), generator=generator)[:subset_size]]
            fake = generated[torch.randperm(len(generated), generator=generator)[:subset_size]]
            scores.append(poly_mmd(real, fake, cfg.degree, cfg.gamma, cfg.coef))
        stacked = torch.stack(scores)
        return {self.name: float(stacked.mean()), f"{self.name}/std": float(stacked.std(unbiased=False))}
