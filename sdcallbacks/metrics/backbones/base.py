"""Backbones: the backbone networks that turn images into features, shared between metrics.

A :class:`Backbone` maps a list of images to one feature row per image (a tensor, or a tuple of tensors
for multi-layer features); a row of NaN means "no feature for this image" (MTCNN found no face). Every
backbone has a ``key`` naming the model and its weights: metrics that ask the
:class:`~sdcallbacks.metrics.backbones.pool.BackbonePool` for the same key get the same loaded instance,
and a :class:`FeatureCache` runs each backbone at most once per batch of images, whichever metrics read
its features.

Placement (``scoring.backbones``): :meth:`Backbone.offload` frees the accelerator after a validation
(torch modules move to the CPU; ONNX Runtime sessions, which cannot move, are dropped and rebuilt from
their file); the next :meth:`Backbone.embed` brings the weights back. Neither step draws random numbers,
so both are safe in the background scoring thread, unlike the first load (see :meth:`ensure_loaded`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence

import torch
from PIL import Image

from sdcallbacks.sampling.rng import isolated_load

Features = torch.Tensor | tuple[torch.Tensor, ...]


class Backbone(ABC):
    """A backbone network. Weights load on first use."""

    def __init__(self, device: str = "cpu", batch_size: int = 16):
        self.device = device
        self.batch_size = batch_size
        self._loaded = False
        self._offloaded = False

    @property
    @abstractmethod
    def key(self) -> str:
        """Names the model and its weights; equal keys mean equal features."""

    @abstractmethod
    def load(self) -> None:
        """Load the weights (once)."""

    @abstractmethod
    def forward(self, images: Sequence[Image.Image]) -> Features:
        """Features of one batch of at most ``batch_size`` images."""

    def ensure_loaded(self) -> None:
        if self._offloaded:
            self._onload()
            self._offloaded = False
        elif not self._loaded:
            isolated_load(self.load)
            self._loaded = True

    @property
    def loaded(self) -> bool:
        """Whether the weights were loaded (offloaded ones included)."""
        return self._loaded

    @property
    def on_accelerator(self) -> bool:
        return not str(self.device).startswith("cpu")

    def offload(self) -> None:
        """Free the accelerator's memory (weights go to the CPU); a no-op on the CPU or before loading."""
        if self._loaded and not self._offloaded and self.on_accelerator:
            self._offload()
            self._offloaded = True

    def _modules(self) -> list[torch.nn.Module]:
        return [value for value in vars(self).values() if isinstance(value, torch.nn.Module)]

    def _offload(self) -> None:
        for module in self._modules():
            module.to("cpu")

    def _onload(self) -> None:
        for module in self._modules():
            module.to(self.device)

    @torch.inference_mode()
    def embed(self, images: Sequence[Image.Image]) -> Features:
        """Features of every image, batched; rows follow ``images``."""
        self.ensure_loaded()
        parts = [
            self.forward(images[start : start + self.batch_size])
            for start in range(0, len(images), self.batch_size)
        ]
        if not parts:
            raise ValueError(f"{self.key}: no images to embed")
        if isinstance(parts[0], tuple):
            return tuple(torch.cat([p[i] for p in parts]) for i in range(len(parts[0])))
        return torch.cat(parts)


class SessionBackbone(Backbone):
    """A backbone run by ONNX Runtime: its sessions (the attributes named in ``sessions``) cannot move
    between devices, so offloading drops them and the way back rebuilds them with :meth:`load` (which reads
    the file again; no random initialisation is involved)."""

    sessions: tuple[str, ...] = ("session",)

    def _offload(self) -> None:
        for name in self.sessions:
            setattr(self, name, None)

    def _onload(self) -> None:
        self.load()


class FeatureCache:
    """Features of one batch of images, computed at most once per backbone. A :meth:`subset` reads its
    rows from the whole batch's features, so scoring part of a batch runs no backbone twice."""

    def __init__(self, images: Sequence[Image.Image]):
        self.images = images
        self._features: dict[str, Features] = {}
        self._parent: tuple[FeatureCache, list[int]] | None = None

    def get(self, backbone: Backbone) -> Features:
        if backbone.key not in self._features:
            if self._parent is not None:
                parent, rows = self._parent
                whole = parent.get(backbone)
                index = torch.tensor(rows, dtype=torch.long)
                features = tuple(t[index] for t in whole) if isinstance(whole, tuple) else whole[index]
            else:
                features = backbone.embed(self.images)
            self._features[backbone.key] = features
        return self._features[backbone.key]

    def subset(self, rows: list[int]) -> FeatureCache:
        """The features of the images at ``rows``, in that order."""
        view = FeatureCache([self.images[i] for i in rows])
        view._parent = (self, list(rows))
        return view

    def __contains__(self, backbone: Backbone) -> bool:
        return backbone.key in self._features


class TextEmbeddings:
    """Prompt embeddings of a text-image backbone, each distinct prompt encoded once per run, in batches
    of ``batch_size`` by ``encode`` (a list of prompts to an (N, D) tensor)."""

    def __init__(self, encode: Callable[[list[str]], torch.Tensor], batch_size: int):
        self.encode = encode
        self.batch_size = batch_size
        self.rows: dict[str, torch.Tensor] = {}

    @torch.inference_mode()
    def __call__(self, prompts: Sequence[str]) -> torch.Tensor:
        new = [p for p in dict.fromkeys(prompts) if p not in self.rows]
        for start in range(0, len(new), self.batch_size):
            chunk = new[start : start + self.batch_size]
            self.rows.update(zip(chunk, self.encode(chunk).float().cpu()))
        return torch.stack([self.rows[p] for p in prompts])
