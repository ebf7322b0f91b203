"""``diversity``: DreamBooth's DIV score, the mean pairwise LPIPS distance between images of the same
prompt across seeds (higher: more varied; a collapsing model draws the same picture for every seed).
Runs on all images of the validation at once (the seeds of a prompt may be split across processes).
See :mod:`.pairwise` for how per-image values relate to the prompt's DIV."""

from __future__ import annotations

from sdcallbacks.config.metrics import DiversityConfig
from sdcallbacks.metrics.backbones.lpips_net import LPIPSNet
from sdcallbacks.metrics.base import ImageBatch, ImageMetric, Scores
from sdcallbacks.metrics.diversity.pairwise import mean_distance_to_others
from sdcallbacks.metrics.registry import register_metric


@register_metric
class Diversity(ImageMetric):
    name = "diversity"
    higher_is_better = True
    needs_all_images = True
    config_class = DiversityConfig
    config: DiversityConfig

    def load(self) -> None:
        cfg = self.config
        self.lpips = self.pool.get(LPIPSNet(cfg.net, cfg.trunk_weights, self.device, cfg.batch_size))

    def compute(self, batch: ImageBatch) -> Scores:
        scores: list[float | None] = [None] * len(batch)
        for group in batch.prompt_groups():
            if len(group) < 2:
                continue
            features = self.lpips.embed([batch.images[i] for i in group])  # same prompt: same size
            for position, value in zip(group, mean_distance_to_others(self.lpips.distances(features))):
                scores[position] = value
        return {self.name: scores}
