"""Backbone networks shared between metrics."""

from sdcallbacks.metrics.backbones.base import Backbone, FeatureCache, Features
from sdcallbacks.metrics.backbones.pool import BackbonePool

__all__ = ["Backbone", "BackbonePool", "FeatureCache", "Features"]
