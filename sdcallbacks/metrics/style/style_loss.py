"""``style_loss``: GhostReview's VGG19 Gram-matrix style loss against the style reference images.

Per image and reference: Σ over the five style layers of mean((G_image − G_reference)²) over the C x C
Gram entries, with the Grams of :mod:`sdcallbacks.metrics.backbones.vgg` (unnormalised, post-ReLU at
conv1_1..conv4_1, pre-ReLU at conv5_1, images squashed to 512 x 512). The image's score is the mean over
references. Values are huge (GhostReview z-scores them per prompt); compare steps, not runs. Lower is
better.
"""

from __future__ import annotations

import torch

from sdcallbacks.config.metrics import StyleLossConfig
from sdcallbacks.metrics.backbones.vgg import VGGGram
from sdcallbacks.metrics.base import ImageBatch, ImageMetric, Scores
from sdcallbacks.metrics.registry import register_metric


def style_loss(
    image_grams: tuple[torch.Tensor, ...], reference_grams: tuple[torch.Tensor, ...]
) -> torch.Tensor:
    """(N images, M references) losses from per-layer Grams of shapes (N, C, C) and (M, C, C)."""
    total = 0
    for g_image, g_ref in zip(image_grams, reference_grams):
        diff = g_image.double()[:, None] - g_ref.double()[None, :]
        total = total + diff.pow(2).mean(dim=(2, 3))
    return total


@register_metric
class StyleLoss(ImageMetric):
    name = "style_loss"
    higher_is_better = False
    config_class = StyleLossConfig
    config: StyleLossConfig

    def load(self) -> None:
        cfg = self.config
        self.vgg = self.pool.get(VGGGram(cfg.weights, cfg.size, self.device, cfg.batch_size))
        self.references = self.pool.references.features(self.vgg, cfg.references)

    def compute(self, batch: ImageBatch) -> Scores:
        return {self.name: style_loss(batch.features.get(self.vgg), self.references).mean(dim=1).tolist()}
