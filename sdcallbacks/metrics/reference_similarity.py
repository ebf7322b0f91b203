"""Metrics that score an image by the mean cosine between its embedding and each reference image's
(DreamBooth's CLIP-I, DreamBench's DINO): one class, the backbone being the only difference. Reference
images are embedded once per run (and cached on disk, keyed by file content and model)."""

from __future__ import annotations

from abc import abstractmethod

from sdcallbacks.metrics.backbones.base import Backbone
from sdcallbacks.metrics.backbones.clip import normalized
from sdcallbacks.metrics.base import ImageBatch, ImageMetric, Scores


class ReferenceSimilarity(ImageMetric):
    higher_is_better = True

    @abstractmethod
    def backbone(self) -> Backbone:
        """The embedding network, as the config names it."""

    def load(self) -> None:
        self.embedder = self.pool.get(self.backbone())
        self.references = normalized(self.pool.references.features(self.embedder, self.config.references))

    def compute(self, batch: ImageBatch) -> Scores:
        images = normalized(batch.features.get(self.embedder))
        return {self.name: (images @ self.references.T).mean(dim=1).tolist()}
