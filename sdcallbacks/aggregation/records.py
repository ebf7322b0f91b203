"""Per-image score records and their aggregates for one validation.

An :class:`ImageRecord` is one row of ``metrics.jsonl``: step, variant, prompt, seed and every score.
:func:`aggregate` turns the records of one validation into the scalars that trackers log:
``val/<key>/mean``, ``/std`` (sample std), ``/n`` (images scored), ``/skipped`` (images the metric did not
apply to), ``/ci_low`` and ``/ci_high`` (95% bootstrap interval of the mean, seeded), ``/good_rate`` (share
of images at or beyond the key's threshold, where one is set), per-prompt means ``val/<key>/prompt/<name>``,
and ``/delta``: the mean over (prompt, seed) pairs of score minus the baseline's score for the same pair,
when a baseline was recorded. Set-level metrics (KID) give one value, ``val/<key>``, via :func:`set_values`.

``None`` means the metric does not apply to an image (no face found, no prompt): it is skipped. A score
that is NaN or infinite is different: the metric ran and broke down, so it stays in, and the mean (or the
set value) is non-finite too. Early stopping's ``check_finite`` then acts on it, as in Lightning, instead
of the validation silently losing its monitored key.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from sdcallbacks.aggregation.keys import SET_STATISTICS
from sdcallbacks.metrics.base import KeySpec
from sdcallbacks.prompts.library import ImageJob


@dataclass
class ImageRecord:
    step: int
    variant: str
    prompt_name: str
    prompt_index: int
    image_index: int
    seed: int
    prompt: str
    image_path: str | None = None
    scores: dict[str, float | None] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)  # metrics' per-image details (detail_keys)

    @classmethod
    def for_job(cls, step: int, variant: str, job: ImageJob, image_path: str | None = None) -> ImageRecord:
        prompt = job.prompt
        return cls(
            step, variant, prompt.name, prompt.index, job.image_index, job.seed, prompt.prompt, image_path
        )

    @property
    def pair(self) -> tuple[str, int]:
        return (self.prompt_name, self.seed)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        if not data["details"]:
            del data["details"]  # most metrics have none: lines stay as they were
        return {"type": "image", **data}


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def _scored(value: float | None) -> bool:
    """Whether an image has a score for a key (a non-finite one included: see the module docstring)."""
    return value is not None


def _mean_std(values: list[float]) -> tuple[float, float]:
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return mean, std


def bootstrap_ci(values: list[float], resamples: int = 1000, seed: int = 0) -> tuple[float, float]:
    """95% percentile bootstrap interval of the mean, from a seeded generator (same values, same interval)."""
    data = np.asarray(values, dtype=np.float64)
    if len(data) < 2:
        return float(data[0]), float(data[0])
    rng = np.random.default_rng(seed)
    means = data[rng.integers(0, len(data), size=(resamples, len(data)))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return float(low), float(high)


def aggregate(
    records: list[ImageRecord],
    baseline: list[ImageRecord] | None = None,
    prefix: str = "val",
    specs: dict[str, KeySpec] | None = None,
) -> dict[str, float]:
    """Scalars for one validation (one variant). Keys without any scored image get only ``/skipped``."""
    specs = specs or {}
    keys = sorted({k for r in records for k in r.scores})
    base = {(r.pair, k): v for r in baseline or [] for k, v in r.scores.items() if _finite(v)}
    out: dict[str, float] = {}
    for key in keys:
        spec = specs.get(key)
        scored = [r for r in records if _scored(r.scores.get(key))]
        out[f"{prefix}/{key}/skipped"] = float(len(records) - len(scored))
        if not scored:
            continue
        values = [r.scores[key] for r in scored]
        mean, std = _mean_std(values)
        if spec is not None and spec.mean_floor is not None:
            mean = max(mean, spec.mean_floor)
        out[f"{prefix}/{key}/mean"] = mean
        out[f"{prefix}/{key}/std"] = std
        out[f"{prefix}/{key}/n"] = float(len(scored))
        out[f"{prefix}/{key}/ci_low"], out[f"{prefix}/{key}/ci_high"] = bootstrap_ci(values)
        if spec is not None and spec.good_threshold is not None:
            t = spec.good_threshold
            good = [v >= t if spec.higher_is_better else v <= t for v in values]
            out[f"{prefix}/{key}/good_rate"] = sum(good) / len(good)
        by_prompt: dict[str, list[float]] = defaultdict(list)
        for r in scored:
            by_prompt[r.prompt_name].append(r.scores[key])
        for name, prompt_values in by_prompt.items():
            out[f"{prefix}/{key}/prompt/{name}"] = sum(prompt_values) / len(prompt_values)
        deltas = [r.scores[key] - base[(r.pair, key)] for r in scored if (r.pair, key) in base]
        if deltas:
            out[f"{prefix}/{key}/delta"] = sum(deltas) / len(deltas)
    return out


def set_values(
    values: dict[str, float | None], baseline: dict[str, float | None] | None = None, prefix: str = "val"
) -> dict[str, float]:
    """Scalars of set-level metrics (KID, CMMD): ``<prefix>/<key>``, ``/delta`` against the baseline's
    value, ``/skipped`` = 1 where the metric could not be computed (``None``; a non-finite value is kept)."""
    out: dict[str, float] = {}
    for key, value in sorted(values.items()):
        if not _scored(value):
            out[f"{prefix}/{key}/skipped"] = 1.0
            continue
        out[f"{prefix}/{key}"] = float(value)
        reference = (baseline or {}).get(key)
        if _finite(reference) and key.rsplit("/", 1)[-1] not in SET_STATISTICS:
            out[f"{prefix}/{key}/delta"] = float(value) - float(reference)
    return out
