"""Metrics: one class per metric, one folder per domain, a registry of config names."""

from sdcallbacks.metrics import tagging  # noqa: F401  (registers tag_accuracy)
from sdcallbacks.metrics.base import Metric, Scores
from sdcallbacks.metrics.registry import METRICS, build_metrics, register_metric

__all__ = ["METRICS", "Metric", "Scores", "build_metrics", "register_metric"]
