"""Feeding precomputed embeddings to torchmetrics' distribution metrics.

torchmetrics' KID, FID and IS take a feature network; handing them :class:`FeatureRows` (the identity,
with ``num_features`` so FID does not probe it) makes them run their own estimators on embeddings that
the shared backbones already computed.

KID and IS shuffle features with ``torch.randperm`` on torch's global generator. Saving and restoring that
generator around them is not enough once scoring runs in a background thread (``scoring.mode: async``):
the training thread may draw in between and the restore would rewind it. So those two draw their
permutations from a private ``sampling.rng.seeded_generator`` instead; a CPU ``torch.Generator`` seeded
with ``s`` yields the same permutations as the global one after ``torch.manual_seed(s)``, so values equal
torchmetrics' own under that seed (tested).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any, TypeVar

import torch
from torch import nn

M = TypeVar("M")


class FeatureRows(nn.Module):
    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        return rows


def on_features(metric_class: Callable[..., M], num_features: int, **kwargs: Any) -> M:
    """A torchmetrics image metric fed embeddings through :class:`FeatureRows`. Its warning that it "will
    save all extracted features in buffer" is about images and is silenced: we hand it features."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return metric_class(feature=FeatureRows(num_features), **kwargs)
