"""``hpsv2``: Human Preference Score v2 / v2.1, the cosine between an image's and its prompt's embeddings
from an open_clip ViT-H-14 fine-tuned on human preference pairs (``xswu/HPSv2``'s
``HPS_v2.1_compressed.pt``, a ``{"state_dict": ...}`` checkpoint of the whole model).

As ``hpsv2.score`` computes it: the model's normalised image and text features, their dot product (no
logit scale: scores sit around 0.2-0.3). Images take HPS's own evaluation transform, not open_clip's:
the longer side resized to 224 and the rest zero-padded, so a portrait or landscape image is scored whole
(:func:`~sdcallbacks.metrics.backbones.clip.letterbox`); prompts the architecture's tokenizer (77 tokens).
The backbone is the CLIP backbone of the other CLIP metrics with these weights and this transform.
"""

from __future__ import annotations

from sdcallbacks.config.metrics import ClipModelConfig, Hpsv2Config
from sdcallbacks.metrics.backbones.clip import ClipBackbone, normalized
from sdcallbacks.metrics.base import ImageBatch, ImageMetric, Scores
from sdcallbacks.metrics.registry import register_metric
from sdcallbacks.weights import resolve_file


@register_metric
class Hpsv2(ImageMetric):
    name = "hpsv2"
    higher_is_better = True
    config_class = Hpsv2Config
    uses_prompt = True
    config: Hpsv2Config

    def load(self) -> None:
        cfg = self.config
        weights = resolve_file(cfg.model, cfg.filename)
        clip = ClipModelConfig(model=cfg.architecture, pretrained=str(weights))
        self.clip = self.pool.get(ClipBackbone(clip, self.device, cfg.batch_size, letterbox=True))

    def compute(self, batch: ImageBatch) -> Scores:
        images = normalized(batch.features.get(self.clip))
        texts = normalized(self.clip.embed_texts(batch.prompts))
        return {self.name: (images * texts).sum(dim=1).tolist()}
