"""torch-fidelity's Inception v3 (through torchmetrics' ``NoTrainInceptionV3``), the FID/IS network.

Images go in as uint8 NCHW at their own size; the network resizes them to 299 itself (bilinear with
antialiasing, torchmetrics' default). ``feature`` is ``"2048"`` (pool features, FID) or
``"logits_unbiased"`` (Inception Score). The weights are torch-fidelity's published file; torch-fidelity
loads it itself (``torch.load`` without ``weights_only``), so only point ``weights`` at a file you trust.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from sdcallbacks.metrics.backbones.base import Backbone
from sdcallbacks.metrics.images import drop_alpha
from sdcallbacks.weights import resolve_url_file, torch_home

INCEPTION_URL = "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth"


class InceptionNet(Backbone):
    def __init__(self, feature: str, weights: str | None = None, device: str = "cpu", batch_size: int = 16):
        super().__init__(device, batch_size)
        self.feature = feature
        self.weights = weights

    @property
    def key(self) -> str:
        return f"inception-v3:{self.feature}:{self.weights or 'torch-fidelity'}"

    def load(self) -> None:
        from torchmetrics.image.fid import NoTrainInceptionV3

        path = resolve_url_file(
            self.weights, INCEPTION_URL, torch_home() / "hub" / "checkpoints", "Inception v3 (torch-fidelity)"
        )
        self.net = NoTrainInceptionV3(
            name="inception-v3-compat", features_list=[self.feature], feature_extractor_weights_path=str(path)
        ).to(self.device)

    def forward(self, images: Sequence[Image.Image]) -> torch.Tensor:
        # One image at a time: validation images of different prompts may differ in size.
        rows = []
        for image in images:
            array = torch.from_numpy(np.asarray(drop_alpha(image), dtype=np.uint8).copy())
            rows.append(self.net(array.permute(2, 0, 1)[None].to(self.device)).double().cpu())
        return torch.cat(rows)
