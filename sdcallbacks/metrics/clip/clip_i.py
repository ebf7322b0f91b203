"""``clip_i``: subject fidelity as DreamBooth's CLIP-I, the mean cosine between an image's CLIP embedding
and each reference image's. Reference images are embedded once per run. Training images as references
reward copying them; held-out photos of the subject measure fidelity better."""

from __future__ import annotations

from sdcallbacks.config.metrics import ClipIConfig
from sdcallbacks.metrics.backbones.clip import ClipBackbone, normalized
from sdcallbacks.metrics.base import ImageBatch, ImageMetric, Scores
from sdcallbacks.metrics.registry import register_metric


@register_metric
class ClipI(ImageMetric):
    name = "clip_i"
    higher_is_better = True
    config_class = ClipIConfig
    config: ClipIConfig

    def load(self) -> None:
        self.clip = self.pool.get(ClipBackbone(self.config.clip, self.device, self.config.batch_size))
        self.references = normalized(self.pool.references.features(self.clip, self.config.references))

    def compute(self, batch: ImageBatch) -> Scores:
        images = normalized(batch.features.get(self.clip))
        return {self.name: (images @ self.references.T).mean(dim=1).tolist()}
