"""DINO ViT image embeddings through transformers (``facebook/dino-vits16``; DINOv2 models alike).

Preprocessing is DINO's own evaluation transform (``facebookresearch/dino`` ``eval_linear.py``): bicubic
resize of the short side to 256, centre crop 224, ImageNet mean/std. The embedding is the CLS token of
``last_hidden_state``, not ``pooler_output``: the published DINO checkpoints carry no pooler, so
transformers initialises it at random (REFERENCE §1, transformers#25377).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from sdcallbacks.metrics.backbones.base import Backbone
from sdcallbacks.metrics.images import drop_alpha
from sdcallbacks.weights import from_pretrained

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def preprocess_dino(image: Image.Image, resize: int = 256, crop: int = 224) -> np.ndarray:
    """One image as a (3, crop, crop) float32 array."""
    image = drop_alpha(image)
    width, height = image.size
    scale = resize / min(width, height)
    # torchvision's Resize(int) rule: the short side to ``resize``, the long one truncated.
    size = (resize, int(height * scale)) if width <= height else (int(width * scale), resize)
    image = image.resize(size, Image.BICUBIC)
    left = round((size[0] - crop) / 2.0)  # torchvision center_crop's rounding
    top = round((size[1] - crop) / 2.0)
    image = image.crop((left, top, left + crop, top + crop))
    array = np.asarray(image, dtype=np.float32) / 255.0
    return ((array - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1)


class DinoBackbone(Backbone):
    def __init__(
        self, source: str, device: str = "cpu", batch_size: int = 16, resize: int = 256, crop: int = 224
    ):
        super().__init__(device, batch_size)
        self.source = source
        self.resize, self.crop = resize, crop

    @property
    def key(self) -> str:
        return f"dino:{self.source}:{self.resize}:{self.crop}"

    def load(self) -> None:
        from transformers import AutoConfig, AutoModel

        config = from_pretrained(AutoConfig, self.source, "config.json")
        # DINO's ViT checkpoints carry no pooler: without this transformers reports its weights missing.
        extra = {"add_pooling_layer": False} if config.model_type == "vit" else {}
        self.model = from_pretrained(AutoModel, self.source, "config.json", config=config, **extra).eval()
        self.model.to(self.device)

    def forward(self, images: Sequence[Image.Image]) -> torch.Tensor:
        batch = np.stack([preprocess_dino(im, self.resize, self.crop) for im in images])
        pixels = torch.from_numpy(batch).to(self.device)
        hidden = self.model(pixel_values=pixels).last_hidden_state
        return hidden[:, 0].float().cpu()
