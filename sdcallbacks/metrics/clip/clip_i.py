"""``clip_i``: subject fidelity as DreamBooth's CLIP-I, the mean cosine between an image's CLIP embedding
and each reference image's. Training images as references reward copying them; held-out photos of the
subject measure fidelity better."""

from __future__ import annotations

from sdcallbacks.config.metrics import ClipIConfig
from sdcallbacks.metrics.backbones.clip import ClipBackbone
from sdcallbacks.metrics.reference_similarity import ReferenceSimilarity
from sdcallbacks.metrics.registry import register_metric


@register_metric
class ClipI(ReferenceSimilarity):
    name = "clip_i"
    config_class = ClipIConfig
    config: ClipIConfig

    def backbone(self) -> ClipBackbone:
        return ClipBackbone(self.config.clip, self.device, self.config.batch_size)

    @property
    def clip(self) -> ClipBackbone:
        return self.embedder
