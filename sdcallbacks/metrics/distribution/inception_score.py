"""``inception_score``: Inception Score through torchmetrics' ``InceptionScore`` (softmax of
torch-fidelity's unbiased Inception logits, ``splits`` groups, mean and std of exp(KL)). Needs no
reference images. The split shuffle runs under a fixed seed. Higher is better."""

from __future__ import annotations

from typing import ClassVar

from sdcallbacks.config.metrics import InceptionScoreConfig
from sdcallbacks.metrics.backbones.inception import InceptionNet
from sdcallbacks.metrics.base import ImageBatch, SetMetric
from sdcallbacks.metrics.distribution.features import on_features, seeded
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
        from torchmetrics.image.inception import InceptionScore as TorchmetricsIS

        logits = batch.features.get(self.net)
        metric = on_features(TorchmetricsIS, logits.shape[1], splits=min(self.config.splits, len(logits)))
        metric.update(logits)
        mean, std = seeded(0, metric.compute)
        return {self.name: float(mean), f"{self.name}/std": float(std)}
