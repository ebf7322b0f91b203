"""Is the difference between two models real? A paired bootstrap over the images they share.

Both models drew the same (prompt, seed) pairs, so their per-image scores are paired: the difference of
the means is the mean of the per-pair differences, and resampling pairs (with replacement, seeded) gives
its 95% percentile interval and the share of resamples in which the order of the two flips.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class PairedComparison:
    """``first`` minus ``second`` on their common pairs; ``flip_rate`` is the share of resamples in which
    ``second`` is at least as good as ``first`` (the direction given by ``higher_is_better``)."""

    key: str
    pairs: int
    difference: float
    ci_low: float
    ci_high: float
    flip_rate: float
    resamples: int

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def paired_bootstrap(
    first: dict[tuple[str, int], float],
    second: dict[tuple[str, int], float],
    key: str,
    higher_is_better: bool = True,
    resamples: int = 10_000,
    seed: int = 0,
) -> PairedComparison | None:
    """Paired bootstrap of ``mean(first - second)`` over the pairs both scored (finite values); None with
    fewer than two such pairs."""
    pairs = sorted(
        p for p in set(first) & set(second) if math.isfinite(first[p]) and math.isfinite(second[p])
    )
    if len(pairs) < 2:
        return None
    differences = np.asarray([first[p] - second[p] for p in pairs], dtype=np.float64)
    rng = np.random.default_rng(seed)
    means = differences[rng.integers(0, len(pairs), size=(resamples, len(pairs)))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    flipped = means <= 0 if higher_is_better else means >= 0
    return PairedComparison(
        key=key,
        pairs=len(pairs),
        difference=float(differences.mean()),
        ci_low=float(low),
        ci_high=float(high),
        flip_rate=float(flipped.mean()),
        resamples=resamples,
    )
