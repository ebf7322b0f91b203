"""Metrics: one class per metric, one folder per domain, a registry of config names.

Importing this package registers every metric. ``val_loss`` scores the model, not images, and lives in
:mod:`sdcallbacks.metrics.loss`.
"""

from sdcallbacks.metrics import (  # noqa: F401  (imported to register their metrics)
    aesthetic,
    character,
    clip,
    distribution,
    diversity,
    identity,
    preference,
    style,
    subject,
    tagging,
)
from sdcallbacks.metrics.backbones import Backbone, BackbonePool, FeatureCache
from sdcallbacks.metrics.base import ImageBatch, ImageMetric, KeySpec, Metric, Scores, SetMetric
from sdcallbacks.metrics.registry import METRICS, build_metrics, register_metric

__all__ = [
    "METRICS",
    "Backbone",
    "BackbonePool",
    "FeatureCache",
    "ImageBatch",
    "ImageMetric",
    "KeySpec",
    "Metric",
    "Scores",
    "SetMetric",
    "build_metrics",
    "register_metric",
]
