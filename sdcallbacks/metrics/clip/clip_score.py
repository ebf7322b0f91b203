"""``clip_score``: how well the image matches its prompt, 100 x cos(CLIP image, CLIP text).

Per image the raw 100 x cosine (it can be negative); the logged mean is clamped at 0 afterwards, as
torchmetrics' ``CLIPScore`` clamps its mean, so the two agree on the same CLIP model. Prompts longer than
77 tokens are cut keeping the end token (torchmetrics slices the end token away instead) and logged.
CLIP score is weak on booru-tag prompts; prefer ``tag_accuracy`` there. An image without a prompt (a scored
folder with no caption) is skipped, not compared with an empty text.
"""

from __future__ import annotations

from sdcallbacks.config.metrics import ClipScoreConfig
from sdcallbacks.metrics.backbones.clip import ClipBackbone, normalized
from sdcallbacks.metrics.base import ImageBatch, ImageMetric, KeySpec, Scores
from sdcallbacks.metrics.registry import register_metric


@register_metric
class ClipScore(ImageMetric):
    name = "clip_score"
    higher_is_better = True
    config_class = ClipScoreConfig
    uses_prompt = True
    config: ClipScoreConfig

    def key_specs(self) -> dict[str, KeySpec]:
        return {self.name: KeySpec(True, self.config.good_threshold, mean_floor=0.0)}

    def load(self) -> None:
        self.clip = self.pool.get(ClipBackbone(self.config.clip, self.device, self.config.batch_size))

    def compute(self, batch: ImageBatch) -> Scores:
        images = normalized(batch.features.get(self.clip))
        texts = normalized(self.clip.embed_texts(batch.prompts))
        return {self.name: (100.0 * (images * texts).sum(dim=1)).tolist()}
