"""``inception_score``: Inception Score as torchmetrics' ``InceptionScore`` computes it (softmax of
torch-fidelity's unbiased Inception logits, shuffled, ``splits`` groups, mean and std of exp(mean KL to
the group's marginal)). Needs no reference images. The shuffle draws from a private generator seeded 0
(the global one is training's), so the value equals torchmetrics' after ``torch.manual_seed(0)`` (tested).
Higher is better."""

from __future__ import annotations

from typing import ClassVar

import torch

from sdcallbacks.config.metrics import InceptionScoreConfig
from sdcallbacks.metrics.backbones.inception import InceptionNet
from sdcallbacks.metrics.base import ImageBatch, SetMetric
from sdcallbacks.metrics.distribution.features import seeded_generator
from sdcallbacks.metrics.registry import register_metric


@register_metric
class InceptionScore(SetMetric):
    name = "inception_score"
    higher_is_better = True
    config_class = InceptionScoreConfig
    extra_keys: ClassVar[dict[str, bool]] = {"std": False}
    config: InceptionScoreConfig

    def load(self) -> None:
        cfg = self.config
        self.net = self.pool.get(InceptionNet("logits_unbiased", cfg.weights, self.device, cfg.batch_size))

    def compute(self, batch: ImageBatch) -> dict[str, float | None]:
        logits = batch.features.get(self.net)
        logits = logits[torch.randperm(len(logits), generator=seeded_generator(0))]
        splits = min(self.config.splits, len(logits))
        scores = []
        for part in logits.chunk(splits, dim=0):
            prob, log_prob = part.softmax(dim=1), part.log_softmax(dim=1)
            marginal = prob.mean(dim=0, keepdim=True)
            scores.append((prob * (log_prob - marginal.log())).sum(dim=1).mean().exp())
        stacked = torch.stack(scores)
        return {self.name: float(stacked.mean()), f"{self.name}/std": float(stacked.std())}
