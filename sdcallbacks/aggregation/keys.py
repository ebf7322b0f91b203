"""Every key a validation can log, known before training starts (to check ``monitor`` against)."""

from __future__ import annotations

from collections.abc import Iterable

from sdcallbacks.metrics.base import Metric, SetMetric

IMAGE_KEY_PARTS = ("mean", "std", "n", "skipped", "ci_low", "ci_high", "delta")
# What a validation cost (relative to the variant prefix); which appear depends on the mode and device.
COST_KEYS = (
    "time/sampling_s",
    "time/scoring_s",
    "time/blocked_s",
    "time/waited_s",
    "peak_mem_mb",
    "mem_delta_mb",
    "rss_mb",
    "peak_rss_mb",
)


def is_cost_key(key: str) -> bool:
    """Whether a logged key measures the validation's cost rather than the model (varies run to run)."""
    return key.endswith(tuple(f"/{k}" for k in COST_KEYS))


# A set metric's spread and interval (kid/std, cmmd/ci_low): no delta against the baseline of their own.
SET_STATISTICS = {"std", "ci_low", "ci_high"}


def variant_prefix(variant: str) -> str:
    """``val`` for the trained (or base) weights, ``val/ema`` for the EMA weights."""
    return "val" if variant in ("model", "base") else f"val/{variant}"


def expected_keys(
    metrics: Iterable[Metric],
    prompt_names: Iterable[str],
    variants: Iterable[str] = ("model",),
    val_loss_keys: Iterable[str] = (),
    score_keys: Iterable[str] = (),
) -> list[str]:
    """Sorted keys of the aggregates (see :mod:`sdcallbacks.aggregation.records`)."""
    names = list(prompt_names)
    relative: list[str] = []
    for metric in metrics:
        specs = metric.key_specs()
        for key in metric.output_keys():
            if isinstance(metric, SetMetric):
                relative += [key, f"{key}/skipped"]
                if key.rsplit("/", 1)[-1] not in SET_STATISTICS:  # a spread or interval has no delta
                    relative.append(f"{key}/delta")
                continue
            relative += [f"{key}/{part}" for part in IMAGE_KEY_PARTS]
            relative += [f"{key}/prompt/{name}" for name in names]
            if specs[key].good_threshold is not None:
                relative.append(f"{key}/good_rate")
    for key in val_loss_keys:
        relative += [key, f"{key}/delta", f"{key}/skipped"]
    if score_keys:
        relative += ["score", *(f"score/{key}" for key in score_keys)]
    relative += COST_KEYS
    return sorted({f"{variant_prefix(v)}/{key}" for v in variants for key in relative})
