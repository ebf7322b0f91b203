"""``aesthetic_anime``: skytnt's anime aesthetic model, one score in about 0..1 per image."""

from __future__ import annotations

from sdcallbacks.config.metrics import AestheticAnimeConfig
from sdcallbacks.metrics.backbones.anime_aesthetic import AnimeAestheticNet
from sdcallbacks.metrics.base import ImageBatch, ImageMetric, Scores
from sdcallbacks.metrics.registry import register_metric


@register_metric
class AestheticAnime(ImageMetric):
    name = "aesthetic_anime"
    higher_is_better = True
    config_class = AestheticAnimeConfig
    config: AestheticAnimeConfig

    def load(self) -> None:
        cfg = self.config
        self.net = self.pool.get(AnimeAestheticNet(cfg.model, cfg.size, self.device, cfg.batch_size))

    def compute(self, batch: ImageBatch) -> Scores:
        return {self.name: batch.features.get(self.net)[:, 0].tolist()}
