"""``dino``: subject fidelity as DreamBench's DINO score, the mean cosine between an image's DINO ViT-S/16
CLS embedding and each reference image's. DINO, trained without labels, tells apart instances of one class
(this dog, not any dog) better than CLIP-I."""

from __future__ import annotations

from sdcallbacks.config.metrics import DinoConfig
from sdcallbacks.metrics.backbones.dino import DinoBackbone
from sdcallbacks.metrics.reference_similarity import ReferenceSimilarity
from sdcallbacks.metrics.registry import register_metric


@register_metric
class Dino(ReferenceSimilarity):
    name = "dino"
    config_class = DinoConfig
    config: DinoConfig

    def backbone(self) -> DinoBackbone:
        cfg = self.config
        return DinoBackbone(cfg.model, self.device, cfg.batch_size, cfg.resize, cfg.crop)
