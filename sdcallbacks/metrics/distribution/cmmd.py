"""``cmmd``: CLIP Maximum Mean Discrepancy (Jayasumana et al., "Rethinking FID", CVPR 2024).

CMMD = scale · (mean K(x, x') + mean K(y, y') − 2 · mean K(x, y)) with the Gaussian kernel
K(a, b) = exp(−|a − b|² / (2σ²)), σ = 10, scale = 1000, means over every entry including the diagonal
(the biased estimator of google-research's ``cmmd/distance.py``, with squared distances expanded as
|a|² + |b|² − 2ab as there), on L2-normalised CLIP ViT-L/14@336 image embeddings; sums in float64.
Lower is better; there is no subset sampling, so it is deterministic.

Difference from the reference: images take open_clip's eval transform (resize the short side, then
centre crop) where the paper's code centre-crops first; the two agree up to resampling.
"""

from __future__ import annotations

import torch

from sdcallbacks.config.metrics import CmmdConfig
from sdcallbacks.metrics.backbones.clip import ClipBackbone, normalized
from sdcallbacks.metrics.base import ImageBatch, SetMetric
from sdcallbacks.metrics.registry import register_metric


def mmd_rbf(x: torch.Tensor, y: torch.Tensor, sigma: float = 10.0, scale: float = 1000.0) -> float:
    gamma = 1.0 / (2 * sigma**2)

    def mean_kernel(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        squared = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T
        return torch.exp(-gamma * squared).mean()

    return float(scale * (mean_kernel(x, x) + mean_kernel(y, y) - 2 * mean_kernel(x, y)))


@register_metric
class Cmmd(SetMetric):
    name = "cmmd"
    higher_is_better = False
    config_class = CmmdConfig
    config: CmmdConfig

    def load(self) -> None:
        self.clip = self.pool.get(ClipBackbone(self.config.clip, self.device, self.config.batch_size))
        self.references = normalized(
            self.pool.references.features(self.clip, self.config.references)
        ).double()

    def set_features(self, batch: ImageBatch) -> torch.Tensor:
        return normalized(batch.features.get(self.clip)).double()

    def on_features(self, generated: torch.Tensor) -> dict[str, float | None]:
        return {self.name: mmd_rbf(self.references, generated, self.config.sigma, self.config.scale)}
