"""``pickscore``: PickScore v1, the prompt-image logit of a CLIP-H fine-tuned on Pick-a-Pic preferences
(``yuvalkirstain/PickScore_v1`` with CLIP-H's processor), as its authors compute it:
``logit_scale.exp() * cos(text embedding, image embedding)`` (scores sit around 20-23; a difference of 1
between two images of one prompt is a strong preference). Higher is better.
"""

from __future__ import annotations

from sdcallbacks.config.metrics import PickScoreConfig
from sdcallbacks.metrics.backbones.clip import normalized
from sdcallbacks.metrics.backbones.hf_clip import HfClipBackbone
from sdcallbacks.metrics.base import ImageBatch, ImageMetric, Scores
from sdcallbacks.metrics.registry import register_metric


@register_metric
class PickScore(ImageMetric):
    name = "pickscore"
    higher_is_better = True
    config_class = PickScoreConfig
    uses_prompt = True
    config: PickScoreConfig

    def load(self) -> None:
        cfg = self.config
        self.clip = self.pool.get(HfClipBackbone(cfg.model, cfg.processor, self.device, cfg.batch_size))

    def compute(self, batch: ImageBatch) -> Scores:
        images = normalized(batch.features.get(self.clip))
        texts = normalized(self.clip.embed_texts(batch.prompts))
        return {self.name: (self.clip.logit_scale * (images * texts).sum(dim=1)).tolist()}
