"""Scoring a validation's images: every metric over one batch, per-image scores into the records.

A metric that raises loses only its own scores when the caller handles the failure (``on_failure``); the
other metrics still run. Shared by the validation core and ``sdcallbacks score`` (a folder, no training).
"""

from __future__ import annotations

from collections.abc import Callable

from sdcallbacks.aggregation.records import ImageRecord
from sdcallbacks.metrics.base import ImageBatch, Metric, SetMetric


def record_scores(
    metrics: list[Metric],
    batch: ImageBatch,
    records: list[ImageRecord],
    on_failure: Callable[[Metric], None] | None = None,
) -> dict[str, float | None]:
    """Score ``batch`` with each metric: per-image scores go into ``records`` (one per image), set-level
    values are returned. When a metric raises, ``on_failure(metric)`` runs inside the ``except``; it may
    re-raise, otherwise that metric's scores are recorded as missing and the others go on. Without
    ``on_failure`` the error propagates."""
    sets: dict[str, float | None] = {}
    for metric in metrics:
        try:
            scores = metric.score(batch)
        except Exception:
            if on_failure is None:
                raise
            on_failure(metric)
            missing = None if isinstance(metric, SetMetric) else [None] * len(batch)
            scores = dict.fromkeys(metric.output_keys(), missing)
        if isinstance(metric, SetMetric):
            sets.update(scores)
            continue
        for key, values in scores.items():
            into = "details" if key in metric.detail_keys else "scores"
            for record, value in zip(records, values):
                getattr(record, into)[key] = value
    return sets
