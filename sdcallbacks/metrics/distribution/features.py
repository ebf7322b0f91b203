"""Feeding precomputed embeddings to torchmetrics' distribution metrics.

torchmetrics' KID, FID and IS take a feature network; handing them :class:`FeatureRows` (the identity,
with ``num_features`` so FID does not probe it) makes them run their own estimators on embeddings that
the shared backbones already computed. Their subset sampling draws from torch's global generator, so
:func:`seeded` runs them under a fixed seed and restores every global random stream afterwards: the
result is reproducible and training's random draws are untouched.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any, TypeVar

import torch
from torch import nn

from sdcallbacks.sampling.rng import isolated_rng

T = TypeVar("T")
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


def seeded(seed: int, fn: Callable[[], T]) -> T:
    with isolated_rng():
        torch.manual_seed(seed)
        return fn()
