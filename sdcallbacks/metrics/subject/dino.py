"""``dino``: subject fidelity as DreamBench's DINO score, the mean cosine between an image's DINO ViT-S/16
CLS embedding and each reference image's. DINO, trained without labels, tells apart instances of one class
(this dog, not any dog) better than CLIP-I. Reference images are embedded once per run."""

from __future__ import annotations

from sdcallbacks.config.metrics import DinoConfig
from sdcallbacks.metrics.backbones.clip import normalized
from sdcallbacks.metrics.backbones.dino import DinoBackbone
from sdcallbacks.metrics.base import ImageBatch, ImageMetric, Scores
from sdcallbacks.metrics.registry import register_metric


@register_metric
class Dino(ImageMetric):
    name = "dino"
    higher_is_better = True
    config_class = DinoConfig
    config: DinoConfig

    def load(self) -> None:
        cfg = self.config
        backbone = DinoBackbone(cfg.model, self.device, cfg.batch_size, cfg.resize, cfg.crop)
        self.dino = self.pool.get(backbone)
        self.references = normalized(self.pool.references.features(self.dino, cfg.references))

    def compute(self, batch: ImageBatch) -> Scores:
        images = normalized(batch.features.get(self.dino))
        return {self.name: (images @ self.references.T).mean(dim=1).tolist()}
