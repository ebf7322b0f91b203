"""The backbones and reference embeddings of one run, shared by every metric built with them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TypeVar

import torch

from sdcallbacks.metrics.backbones.base import Backbone
from sdcallbacks.metrics.backbones.references import ReferenceStore

B = TypeVar("B", bound=Backbone)


class BackbonePool:
    """One loaded instance per backbone key, shared by every metric built with this pool."""

    def __init__(self, cache_dir: Path | None = None) -> None:
        self._backbones: dict[str, Backbone] = {}
        self.references = ReferenceStore(cache_dir)

    def get(self, backbone: B) -> B:
        """The pool's instance with ``backbone``'s key: ``backbone`` itself the first time (building a
        backbone is cheap; weights load on first use)."""
        return self._backbones.setdefault(backbone.key, backbone)  # type: ignore[return-value]

    def load_all(self) -> None:
        """First-load every backbone now (in the training thread: a first load draws random numbers).
        Offloaded ones stay where they are: they move back when they are next used."""
        for backbone in self._backbones.values():
            if not backbone.loaded:
                backbone.ensure_loaded()

    def offload(self) -> None:
        """Move every loaded backbone off the accelerator and return the freed blocks to the driver."""
        moved = False
        for backbone in self._backbones.values():
            moved |= backbone.on_accelerator and backbone.loaded
            backbone.offload()
        if moved and torch.cuda.is_available():
            torch.cuda.empty_cache()

    def __iter__(self) -> Iterator[Backbone]:
        return iter(self._backbones.values())

    def __len__(self) -> int:
        return len(self._backbones)
