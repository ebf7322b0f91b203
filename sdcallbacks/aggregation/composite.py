"""The composite ``val/score``: a weighted mean of per-metric scores standardised against the baseline.

For each weighted key ``k`` and each prompt ``p`` the validation's mean is standardised by the baseline
validation's images of the same prompt, as GhostReview standardises per prompt::

    z[k, p] = sign[k] * (mean_p(now) - mean_p(baseline)) / sd_p(baseline)

``sign`` is +1 where higher is better (the metric's direction, or the configured ``mode``) and -1 otherwise,
so a larger ``val/score`` is always better. ``sd_p`` is the sample std of the baseline's scores of ``p``;
where it is zero or undefined (one seed, identical scores) the std over all the baseline's images of ``k``
is used, and where that is zero too, 1 (the raw difference). ``z[k]`` is the mean over the prompts scored in
both validations, and ``val/score = sum(w[k] * z[k]) / sum(w[k])``; the baseline scores 0 by construction.
Each ``z[k]`` is logged as ``val/score/<k>``. If a weighted key has no score in a validation, ``val/score``
is not logged at all: a mean over the remaining keys would move for reasons other than the model.

``score_combine: fbeta`` combines two keys instead, fidelity ``P`` (the first, e.g. a character's CCIP
same-rate) and controllability ``R`` (the second, e.g. tag accuracy), both in [0, 1], as the anime
character evaluation pipelines do: ``val/score = (1 + b²) P R / (b² P + R)`` on the validation's means
(``b`` = ``score_beta``; ``b`` > 1 weighs controllability more), 0 where both are 0; no baseline needed.
``val/score/<k>`` are the two means.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass

from sdcallbacks.aggregation.records import ImageRecord


@dataclass(frozen=True)
class ScoreWeight:
    weight: float
    higher_is_better: bool


def _by_prompt(records: list[ImageRecord], key: str, finite_only: bool) -> dict[str, list[float]]:
    out: dict[str, list[float]] = defaultdict(list)
    for record in records:
        value = record.scores.get(key)
        if value is not None and (math.isfinite(value) or not finite_only):
            out[record.prompt_name].append(value)
    return out


def _std(values: list[float]) -> float:
    if len(values) < 2:
        return 0.0
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def standardised(records: list[ImageRecord], baseline: list[ImageRecord], key: str) -> float | None:
    """Mean over prompts of (mean now - mean at baseline) / the baseline's spread, for one key."""
    # A non-finite score now makes z non-finite (early stopping's check_finite acts on it); the baseline's
    # spread is computed from its finite scores only.
    now, base = _by_prompt(records, key, finite_only=False), _by_prompt(baseline, key, finite_only=True)
    pooled = _std([v for values in base.values() for v in values]) or 1.0
    z = [
        (sum(now[p]) / len(now[p]) - sum(base[p]) / len(base[p])) / (_std(base[p]) or pooled)
        for p in now
        if p in base
    ]
    return sum(z) / len(z) if z else None


def composite_score(
    records: list[ImageRecord], baseline: list[ImageRecord], weights: dict[str, ScoreWeight]
) -> dict[str, float]:
    """``{"score": ..., "score/<key>": z}`` (no ``val/`` prefix); no ``score`` if a key is missing."""
    out: dict[str, float] = {}
    for key, term in weights.items():
        z = standardised(records, baseline, key)
        if z is not None:
            out[f"score/{key}"] = z if term.higher_is_better else -z
    if all(f"score/{key}" in out for key in weights) and weights:
        total = sum(term.weight for term in weights.values())
        out["score"] = sum(term.weight * out[f"score/{key}"] for key, term in weights.items()) / total
    return out


def _mean(records: list[ImageRecord], key: str) -> float | None:
    values = [r.scores[key] for r in records if r.scores.get(key) is not None]
    return sum(values) / len(values) if values else None


def fbeta_score(records: list[ImageRecord], keys: list[str], beta: float) -> dict[str, float]:
    """``{"score": F_beta, "score/<fidelity>": P, "score/<controllability>": R}``; no ``score`` if either
    mean is missing (a non-finite mean gives a non-finite score)."""
    fidelity, controllability = keys
    p, r = _mean(records, fidelity), _mean(records, controllability)
    out = {f"score/{k}": v for k, v in ((fidelity, p), (controllability, r)) if v is not None}
    if p is not None and r is not None:
        b2 = beta * beta
        denominator = b2 * p + r
        out["score"] = (1 + b2) * p * r / denominator if denominator != 0 else 0.0
    return out
