"""Per-image score records and their aggregates for one validation.

An :class:`ImageRecord` is one row of ``metrics.jsonl``: step, variant, prompt, seed and every score.
:func:`aggregate` turns the records of one validation into the scalars that trackers log:
``val/<key>/mean``, ``/std`` (sample std), ``/n`` (images scored), ``/skipped`` (images the metric did not
apply to), per-prompt means ``val/<key>/prompt/<name>``, and ``/delta``: the mean over (prompt, seed) pairs
of score minus the baseline's score for the same pair, when a baseline was recorded.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any


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

    @property
    def pair(self) -> tuple[str, int]:
        return (self.prompt_name, self.seed)

    def to_json(self) -> dict[str, Any]:
        return {"type": "image", **asdict(self)}


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def _mean_std(values: list[float]) -> tuple[float, float]:
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return mean, std


def aggregate(
    records: list[ImageRecord], baseline: list[ImageRecord] | None = None, prefix: str = "val"
) -> dict[str, float]:
    """Scalars for one validation (one variant). Keys without any scored image get only ``/skipped``."""
    keys = sorted({k for r in records for k in r.scores})
    base = {(r.pair, k): v for r in baseline or [] for k, v in r.scores.items() if _finite(v)}
    out: dict[str, float] = {}
    for key in keys:
        scored = [r for r in records if _finite(r.scores.get(key))]
        out[f"{prefix}/{key}/skipped"] = float(len(records) - len(scored))
        if not scored:
            continue
        mean, std = _mean_std([r.scores[key] for r in scored])
        out[f"{prefix}/{key}/mean"] = mean
        out[f"{prefix}/{key}/std"] = std
        out[f"{prefix}/{key}/n"] = float(len(scored))
        by_prompt: dict[str, list[float]] = defaultdict(list)
        for r in scored:
            by_prompt[r.prompt_name].append(r.scores[key])
        for name, values in by_prompt.items():
            out[f"{prefix}/{key}/prompt/{name}"] = sum(values) / len(values)
        deltas = [r.scores[key] - base[(r.pair, key)] for r in scored if (r.pair, key) in base]
        if deltas:
            out[f"{prefix}/{key}/delta"] = sum(deltas) / len(deltas)
    return out
