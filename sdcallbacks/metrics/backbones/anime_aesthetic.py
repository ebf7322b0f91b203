"""skytnt's anime aesthetic model (``skytnt/anime-aesthetic`` ``model.onnx``) with its own preprocessing.

As in the ``skytnt/anime-aesthetic-predict`` Space (REFERENCE §1.4): RGB scaled to 0..1 without mean/std,
the long side resized to 768 and the short side to ``int(768 * short / long)`` with OpenCV's default
bilinear (half-pixel centres, no antialiasing: ``F.interpolate(..., antialias=False)`` is the same
filter), pasted at ((768 - h) // 2, (768 - w) // 2) on a black 768 x 768 canvas, NCHW, input ``img``.
The output is one score per image in about 0..1.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from sdcallbacks.metrics.backbones.base import SessionBackbone
from sdcallbacks.metrics.backbones.onnx import fixed_batch, onnx_session
from sdcallbacks.metrics.images import on_white
from sdcallbacks.weights import resolve_file


def preprocess_anime_aesthetic(image: Image.Image, size: int = 768) -> np.ndarray:
    """One image as (3, size, size) float32."""
    array = torch.from_numpy(np.asarray(on_white(image), dtype=np.float32) / 255.0)
    h, w = array.shape[:2]
    h, w = (size, int(size * w / h)) if h > w else (int(size * h / w), size)
    resized = F.interpolate(
        array.permute(2, 0, 1)[None], size=(h, w), mode="bilinear", align_corners=False, antialias=False
    )[0]
    canvas = torch.zeros(3, size, size)
    top, left = (size - h) // 2, (size - w) // 2
    canvas[:, top : top + h, left : left + w] = resized
    return canvas.numpy()


class AnimeAestheticNet(SessionBackbone):
    def __init__(self, source: str, size: int = 768, device: str = "cpu", batch_size: int = 4):
        super().__init__(device, batch_size)
        self.source = source
        self.size = size

    @property
    def key(self) -> str:
        return f"anime-aesthetic:{self.source}"

    def load(self) -> None:
        self.session = onnx_session(resolve_file(self.source, "model.onnx"), self.device)
        self.input_name = self.session.get_inputs()[0].name
        self.batch_size = fixed_batch(self.session) or self.batch_size

    def forward(self, images: Sequence[Image.Image]) -> torch.Tensor:
        batch = np.stack([preprocess_anime_aesthetic(im, self.size) for im in images])
        scores = self.session.run(None, {self.input_name: batch})[0]
        return torch.from_numpy(np.asarray(scores, dtype=np.float32).reshape(len(images), 1))
