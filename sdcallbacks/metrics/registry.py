"""Config name → metric class."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sdcallbacks.config.metrics import MetricConfig
from sdcallbacks.metrics.backbones import BackbonePool

if TYPE_CHECKING:
    from sdcallbacks.metrics.base import Metric

METRICS: dict[str, type[Metric]] = {}


def register_metric(cls: type[Metric]) -> type[Metric]:
    if cls.name in METRICS and METRICS[cls.name] is not cls:
        raise ValueError(
            f"metric name {cls.name!r} is already registered by {METRICS[cls.name].__qualname__}"
        )
    METRICS[cls.name] = cls
    return cls


def build_metrics(
    enabled: dict[str, MetricConfig], device: str = "cpu", pool: BackbonePool | None = None
) -> list[Metric]:
    """Instances for the enabled config sections, in config order, sharing one backbone pool (nothing
    loads yet)."""
    unknown = sorted(set(enabled) - set(METRICS))
    if unknown:
        raise KeyError(f"unknown metric(s) {unknown}; known: {sorted(METRICS)}")
    pool = pool if pool is not None else BackbonePool()
    return [METRICS[name](config, device=device, pool=pool) for name, config in enabled.items()]
