"""``inception_score``: Inception Score as torchmetrics' ``InceptionScore`` computes it (softmax of
torch-fidelity's unbiased Inception logits, shuffled, ``splits`` groups, mean and std of exp(mean KL to
the group's marginal)). Needs no reference images. The shuffle draws from a private generator seeded 0
(the global one is training's), so the value equals torchmetrics' after ``torch.manual_seed(0)`` (tested).
Higher is better.

A group of k images scores at most k (k confident, distinct classes) and a group of one exactly 1, so the
default is one group (``splits: 1``) and a warning says when groups hold fewer than 2 images. With one
group there is no spread: ``inception_score/std`` is not reported (torchmetrics gives NaN and a warning).
The score's authors used 50,000 images; on a validation set of dozens it says little beyond "the images
are confidently and differently classified"."""

from __future__ import annotations

import logging
from typing import ClassVar

import torch

from sdcallbacks.config.metrics import InceptionScoreConfig
from sdcallbacks.metrics.backbones.inception import InceptionNet
from sdcallbacks.metrics.base import ImageBatch, SetMetric
from sdcallbacks.metrics.registry import register_metric
from sdcallbacks.sampling.rng import seeded_generator

logger = logging.getLogger("sdcallbacks")


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

    def set_features(self, batch: ImageBatch) -> torch.Tensor:
        logits = batch.features.get(self.net)
        splits = min(self.config.splits, len(logits))
        if len(logits) < 2 * splits:
            logger.warning(
                "sdcallbacks: inception_score: %d images in %d splits leaves fewer than 2 per split; a split "
                "of k images scores at most k (set inception_score.splits lower, or validate more images)",
                len(logits),
                splits,
            )
        return logits

    def on_features(self, logits: torch.Tensor) -> dict[str, float | None]:
        logits = logits[torch.randperm(len(logits), generator=seeded_generator(0))]
        scores = []
        for part in logits.chunk(min(self.config.splits, len(logits)), dim=0):
            prob, log_prob = part.softmax(dim=1), part.log_softmax(dim=1)
            marginal = prob.mean(dim=0, keepdim=True)
            scores.append((prob * (log_prob - marginal.log())).sum(dim=1).mean().exp())
        stacked = torch.stack(scores)
        std = float(stacked.std()) if len(stacked) > 1 else None
        return {self.name: float(stacked.mean()), f"{self.name}/std": std}
