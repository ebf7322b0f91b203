"""``image_reward``: ImageReward v1.0 (``THUDM/ImageReward``), a BLIP model trained on 137k expert rankings
of prompt-image pairs, scoring how well an image follows its prompt and how good it looks, as
``ImageReward.score`` computes it (see :mod:`sdcallbacks.metrics.backbones.image_reward`). The reward is
normalised by the authors' mean and std over their data: 0 is an average generation of 2023, scores range
roughly from -2 to 2. Higher is better.
"""

from __future__ import annotations

from sdcallbacks.config.metrics import ImageRewardConfig
from sdcallbacks.metrics.backbones.image_reward import ImageRewardBackbone
from sdcallbacks.metrics.base import ImageBatch, ImageMetric, Scores
from sdcallbacks.metrics.registry import register_metric


@register_metric
class ImageReward(ImageMetric):
    name = "image_reward"
    higher_is_better = True
    config_class = ImageRewardConfig
    uses_prompt = True
    config: ImageRewardConfig

    def load(self) -> None:
        cfg = self.config
        self.blip = self.pool.get(ImageRewardBackbone(cfg.model, cfg.tokenizer, self.device, cfg.batch_size))

    def compute(self, batch: ImageBatch) -> Scores:
        rewards = self.blip.rewards(batch.features.get(self.blip), batch.prompts)
        return {self.name: rewards.tolist()}
