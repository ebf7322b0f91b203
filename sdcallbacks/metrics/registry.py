"""Config name → metric class."""

from __future__ import annotations

from pydantic import BaseModel

from sdcallbacks.metrics.base import Metric

METRICS: dict[str, type[Metric]] = {}


def register_metric(cls: type[Metric]) -> type[Metric]:
    if cls.name in METRICS and METRICS[cls.name] is not cls:
        raise ValueError(
            f"metric name {cls.name!r} is already registered by {METRICS[cls.name].__qualname__}"
        )
    METRICS[cls.name] = cls
    return cls


def build_metrics(enabled: dict[str, BaseModel], device: str = "cpu") -> list[Metric]:
    """Instances for the enabled config sections, in config order (nothing loads yet)."""
    unknown = sorted(set(enabled) - set(METRICS))
    if unknown:
        raise KeyError(f"unknown metric(s) {unknown}; known: {sorted(METRICS)}")
    return [METRICS[name](config, device=device) for name, config in enabled.items()]
