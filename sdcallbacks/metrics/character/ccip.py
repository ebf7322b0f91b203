"""``ccip``: anime character similarity with deepghs' CCIP against reference images of the character.

Per image: ``ccip`` = the mean CCIP difference to the reference images (lower: more like the character),
and ``ccip/same_rate`` = the share of references the model judges the same character (difference at or
below the variant's threshold, as ``imgutils.metrics.ccip_same``). The differences come from the
variant's ``model_metrics.onnx`` on the stacked features of the references and the batch.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from sdcallbacks.config.metrics import CcipConfig
from sdcallbacks.metrics.backbones.ccip import CCIPNet
from sdcallbacks.metrics.base import ImageBatch, ImageMetric, Scores
from sdcallbacks.metrics.registry import register_metric


@register_metric
class Ccip(ImageMetric):
    name = "ccip"
    higher_is_better = False
    config_class = CcipConfig
    extra_keys: ClassVar[dict[str, bool]] = {"same_rate": True}
    config: CcipConfig

    def load(self) -> None:
        cfg = self.config
        self.net = self.pool.get(CCIPNet(cfg.model, cfg.variant, self.device, cfg.batch_size))
        self.references = self.pool.references.features(self.net, cfg.references)
        self.threshold = cfg.threshold if cfg.threshold is not None else self.net.threshold

    def compute(self, batch: ImageBatch) -> Scores:
        features = batch.features.get(self.net)
        n_ref = len(self.references)
        differences = self.net.differences(torch.cat([self.references, features]))[n_ref:, :n_ref]
        return {
            self.name: differences.mean(dim=1).tolist(),
            f"{self.name}/same_rate": (differences <= self.threshold).double().mean(dim=1).tolist(),
        }
