"""deepghs CCIP (``deepghs/ccip_onnx``): anime character features and their learned difference.

Per REFERENCE §1.12: images squashed to 384 x 384 (PIL bilinear), RGB / 255, CLIP mean/std, NCHW into
``<variant>/model_feat.onnx`` → 768-d features. ``<variant>/model_metrics.onnx`` turns stacked features
into an (N, N) difference matrix; two images show the same character when their difference is at most the
variant's threshold from ``<variant>/metrics.json``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from sdcallbacks.metrics.backbones.base import SessionBackbone
from sdcallbacks.metrics.backbones.onnx import fixed_batch, onnx_session
from sdcallbacks.metrics.images import on_white
from sdcallbacks.weights import resolve_file

CLIP_MEAN = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32).reshape(3, 1, 1)
CLIP_STD = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32).reshape(3, 1, 1)


def preprocess_ccip(image: Image.Image, size: int = 384) -> np.ndarray:
    array = np.asarray(on_white(image).resize((size, size), Image.BILINEAR), dtype=np.float32) / 255.0
    return (array.transpose(2, 0, 1) - CLIP_MEAN) / CLIP_STD


class CCIPNet(SessionBackbone):
    sessions = ("feature_session", "metrics_session")

    def __init__(self, source: str, variant: str, device: str = "cpu", batch_size: int = 16):
        super().__init__(device, batch_size)
        self.source = source
        self.variant = variant

    @property
    def key(self) -> str:
        return f"ccip:{self.source}:{self.variant}"

    def _file(self, name: str):
        return resolve_file(self.source, f"{self.variant}/{name}")

    def load(self) -> None:
        self.feature_session = onnx_session(self._file("model_feat.onnx"), self.device)
        self.metrics_session = onnx_session(self._file("model_metrics.onnx"), self.device)
        metrics_path = self._file("metrics.json")
        try:
            self.threshold = float(json.loads(metrics_path.read_text(encoding="utf-8"))["threshold"])
        except (KeyError, ValueError, TypeError) as err:
            raise ValueError(f"{metrics_path}: expected a JSON object with a numeric 'threshold'") from err
        self.input_name = self.feature_session.get_inputs()[0].name
        self.size = self.feature_session.get_inputs()[0].shape[2]
        self.size = self.size if isinstance(self.size, int) else 384
        self.batch_size = fixed_batch(self.feature_session) or self.batch_size

    def forward(self, images: Sequence[Image.Image]) -> torch.Tensor:
        batch = np.stack([preprocess_ccip(im, self.size) for im in images])
        return torch.from_numpy(
            self.feature_session.run(None, {self.input_name: batch})[0].astype(np.float32)
        )

    def differences(self, features: torch.Tensor) -> torch.Tensor:
        """(N, N) learned differences between stacked features."""
        self.ensure_loaded()
        name = self.metrics_session.get_inputs()[0].name
        out = self.metrics_session.run(None, {name: features.numpy().astype(np.float32)})[0]
        return torch.from_numpy(np.asarray(out, dtype=np.float32))
