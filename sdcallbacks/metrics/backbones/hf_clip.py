"""A transformers CLIP model with its processor (PickScore's CLIP-H): image and prompt embeddings.

Images and prompts go through the model's ``CLIPProcessor`` as its authors call it (resize of the short
side, centre crop, rescale, normalise; prompts padded and truncated to 77 tokens). Embeddings are the
projected pooled outputs (``get_image_features`` / ``get_text_features``; transformers 5 returns them as
the ``pooler_output`` of a model output), unnormalised, float32, on the CPU.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from PIL import Image

from sdcallbacks.metrics.backbones.base import Backbone, TextEmbeddings
from sdcallbacks.metrics.images import drop_alpha
from sdcallbacks.weights import from_pretrained

MAX_TOKENS = 77


def projected(output: Any) -> torch.Tensor:
    """The projected embedding, whether transformers returns a tensor (4.x) or a model output (5.x)."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


class HfClipBackbone(Backbone):
    def __init__(self, model: str, processor: str, device: str = "cpu", batch_size: int = 16):
        super().__init__(device, batch_size)
        self.model_source = model
        self.processor_source = processor
        self._texts = TextEmbeddings(self._encode_texts, batch_size)

    @property
    def key(self) -> str:
        return f"hf_clip:{self.model_source}:{self.processor_source}"

    def load(self) -> None:
        from transformers import AutoModel, AutoProcessor

        self.model = from_pretrained(AutoModel, self.model_source, "config.json").eval().to(self.device)
        self.processor = from_pretrained(AutoProcessor, self.processor_source, "preprocessor_config.json")

    def forward(self, images: Sequence[Image.Image]) -> torch.Tensor:
        inputs = self.processor(images=[drop_alpha(im) for im in images], return_tensors="pt")
        pixels = inputs["pixel_values"].to(self.device)
        return projected(self.model.get_image_features(pixel_values=pixels)).float().cpu()

    def embed_texts(self, prompts: Sequence[str]) -> torch.Tensor:
        """(N, D) unnormalised text embeddings; each distinct prompt is encoded once per run."""
        self.ensure_loaded()
        return self._texts(prompts)

    def _encode_texts(self, prompts: list[str]) -> torch.Tensor:
        tokens = self.processor(
            text=prompts, padding=True, truncation=True, max_length=MAX_TOKENS, return_tensors="pt"
        )
        return projected(self.model.get_text_features(**{k: v.to(self.device) for k, v in tokens.items()}))

    @property
    def logit_scale(self) -> float:
        self.ensure_loaded()
        return float(self.model.logit_scale.detach().exp())
