from __future__ import annotations

import math

import pytest

from sdcallbacks.selection import EarlyStopping, StoppingReason


def run(scores, **kwargs):
    es = EarlyStopping("val/x", **kwargs)
    for i, score in enumerate(scores):
        if es.check(score):
            return i, es.stopping_reason
    return None, es.stopping_reason


@pytest.mark.parametrize(
    ("scores", "kwargs", "stop_at", "reason"),
    [
        ([1.0, 0.9, 0.8], {"mode": "min", "patience": 1}, None, StoppingReason.NOT_STOPPED),
        ([1.0, 1.0, 1.0], {"mode": "min", "patience": 2}, 2, StoppingReason.PATIENCE_EXHAUSTED),
        # min_delta is strict and measured against the best, not the previous score
        (
            [1.0, 0.5, 0.5],
            {"mode": "min", "patience": 2, "min_delta": 0.5},
            2,
            StoppingReason.PATIENCE_EXHAUSTED,
        ),
        (
            [1.0, 0.49, -0.02],
            {"mode": "min", "patience": 1, "min_delta": 0.5},
            None,
            StoppingReason.NOT_STOPPED,
        ),
        # thresholds compare strictly, as Lightning's torch.gt / torch.lt: equal goes on
        ([0.1, 0.9, 0.95], {"mode": "max", "stopping_threshold": 0.9}, 2, StoppingReason.STOPPING_THRESHOLD),
        (
            [0.9, 0.8],
            {"mode": "min", "stopping_threshold": 0.8, "patience": 5},
            None,
            StoppingReason.NOT_STOPPED,
        ),
        ([0.5, 0.1], {"mode": "max", "divergence_threshold": 0.2}, 1, StoppingReason.DIVERGENCE_THRESHOLD),
        ([0.5, 0.2], {"mode": "max", "divergence_threshold": 0.2}, None, StoppingReason.NOT_STOPPED),
        ([0.5, math.nan], {"mode": "max"}, 1, StoppingReason.NON_FINITE_METRIC),
        ([0.5, math.inf], {"mode": "min"}, 1, StoppingReason.NON_FINITE_METRIC),
        # stopping threshold is checked before divergence
        (
            [0.0],
            {"mode": "min", "stopping_threshold": 0.5, "divergence_threshold": -1.0},
            0,
            StoppingReason.STOPPING_THRESHOLD,
        ),
        ([0.3, 0.2, 0.4, 0.4, 0.1], {"mode": "max", "patience": 2}, 4, StoppingReason.PATIENCE_EXHAUSTED),
    ],
)
def test_lightning_semantics(scores, kwargs, stop_at, reason):
    assert run(scores, **kwargs) == (stop_at, reason)


def test_state_dict_round_trip():
    es = EarlyStopping("val/x", mode="max", patience=3)
    for score in (0.5, 0.4, 0.3):
        es.check(score)
    restored = EarlyStopping("val/x", mode="max", patience=3)
    restored.load_state_dict(es.state_dict())
    assert restored.wait_count == 2 and restored.best_score == 0.5
    assert restored.check(0.1) and restored.stopping_reason is StoppingReason.PATIENCE_EXHAUSTED


@pytest.mark.parametrize("kwargs", [{"mode": "up"}, {"patience": -1}])
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        EarlyStopping("val/x", **kwargs)


SETTINGS = [
    {"mode": "max", "patience": 2},
    {"mode": "min", "patience": 3, "min_delta": 0.1},
    {"mode": "max", "patience": 4, "min_delta": 0.2, "stopping_threshold": 0.8},
    {"mode": "min", "patience": 2, "stopping_threshold": 0.1, "divergence_threshold": 0.9},
    {"mode": "max", "patience": 3, "divergence_threshold": 0.1, "check_finite": False},
    {"mode": "min", "patience": 1, "check_finite": True},
    {"mode": "max", "patience": 0},
]


@pytest.mark.parametrize("settings", SETTINGS, ids=lambda s: ",".join(f"{k}={v}" for k, v in s.items()))
def test_every_decision_equals_lightnings_early_stopping(settings):
    """The same score sequences through Lightning's own EarlyStopping (pytorch-lightning): scores drawn
    from a small grid, so ties, threshold equalities and NaN/inf happen often."""
    import numpy as np
    import torch
    from pytorch_lightning.callbacks import EarlyStopping as LightningEarlyStopping

    grid = [0.0, 0.1, 0.2, 0.3, 0.5, 0.7, 0.8, 0.9, 1.0, math.nan, math.inf]
    rng = np.random.default_rng(0)
    for _ in range(200):
        scores = [float(v) for v in rng.choice(grid, size=8, p=[0.098] * 9 + [0.059, 0.059])]
        ours = EarlyStopping("val/x", **settings)
        theirs = LightningEarlyStopping("val/x", **settings)
        for score in scores:
            stop, _ = theirs._evaluate_stopping_criteria(torch.tensor(score, dtype=torch.float64))
            assert ours.check(score) == stop, (scores, score)
            assert ours.wait_count == theirs.wait_count, (scores, score)
            best = float(theirs.best_score)
            assert ours.best_score == best or (math.isnan(best) and math.isnan(ours.best_score)), scores
            if stop:
                assert ours.stopping_reason.name == theirs.stopping_reason.name, (scores, score)
                break
