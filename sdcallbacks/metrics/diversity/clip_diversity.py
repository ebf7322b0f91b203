"""``diversity_clip``: a cheap diversity, the mean pairwise 1 - cosine of the CLIP image embeddings of a
prompt's images (reuses the CLIP features other metrics computed). See :mod:`.pairwise`."""

from __future__ import annotations

from sdcallbacks.config.metrics import DiversityClipConfig
from sdcallbacks.metrics.backbones.clip import ClipBackbone, normalized
from sdcallbacks.metrics.base import ImageBatch, ImageMetric, Scores
from sdcallbacks.metrics.diversity.pairwise import mean_distance_to_others
from sdcallbacks.metrics.registry import register_metric


@register_metric
class DiversityClip(ImageMetric):
    name = "diversity_clip"
    higher_is_better = True
    needs_all_images = True
    config_class = DiversityClipConfig
    config: DiversityClipConfig

    def load(self) -> None:
        self.clip = self.pool.get(ClipBackbone(self.config.clip, self.device, self.config.batch_size))

    def compute(self, batch: ImageBatch) -> Scores:
        embeddings = normalized(batch.features.get(self.clip))
        scores: list[float | None] = [None] * len(batch)
        for group in batch.prompt_groups():
            rows = embeddings[group]
            for position, value in zip(group, mean_distance_to_others(1.0 - rows @ rows.T)):
                scores[position] = value
        return {self.name: scores}
