"""How well each metric agrees with a person's ratings, and the metric weighting that agrees best.

Likert ratings (1-5; an image's rating is the mean over its raters):

* per metric, Spearman's rho and Kendall's tau-b with the ratings (scipy), each with a 95% percentile
  bootstrap CI over images;
* per rater, leave-one-out agreement: Spearman between the rater's ratings and the other raters' mean on
  the images both rated, the ceiling a metric can reach (a rater with fewer than 2 such images is skipped,
  and counted);
* per metric, the cross-validated mapping of its scores onto the 1-5 scale that matches the rating
  distribution (quantile mapping, oriented by the training folds' correlation; the deepsense.ai
  validation method), as its mean absolute error against the ratings beside the error of always
  answering the training median;
* a composite: an ordinal logistic regression (proportional odds: P(rating <= j) = sigmoid(t_j - x.w))
  of every rating on the image's z-scored metrics, fitted with scipy's optimiser and a small L2 penalty;
  its cross-validated Spearman (the held-out images' x.w against their mean rating) and its weights as a
  ``score:`` block.

Pairwise picks: per metric, the share of picks it orders the same way (bootstrap CI); a Bradley-Terry
model of the picks on the z-scored metrics (logistic, no intercept, a small L2 penalty, scipy's
optimiser), its cross-validated share of picks predicted, and its weights as a ``score:`` block.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import optimize, stats

from sdcallbacks.calibration.data import Ratings, ScoreTable

BOOTSTRAP = 1000
ORDINAL_L2 = 0.01
LEVELS = 5  # the 1-5 scale
BT_L2 = 0.01


@dataclass
class Interval:
    value: float
    low: float
    high: float

    def as_dict(self) -> dict[str, float]:
        return {"value": self.value, "ci_low": self.low, "ci_high": self.high}


@dataclass
class Calibration:
    kind: str  # "likert" or "pairwise"
    images: int
    ratings: int
    metrics: dict[str, dict[str, Any]]  # per metric: correlations / agreement, mapping
    raters: dict[str, float] = field(default_factory=dict)  # leave-one-out Spearman
    skipped_raters: dict[str, str] = field(default_factory=dict)  # rater -> why
    composite: dict[str, Any] = field(default_factory=dict)  # weights, cross-validated quality
    score_block: dict[str, Any] = field(default_factory=dict)  # for the run config's ``score:``


def _bootstrap(statistic, n: int, rng: np.random.Generator) -> tuple[float, float]:
    values = []
    for _ in range(BOOTSTRAP):
        sample = rng.integers(0, n, n)
        value = statistic(sample)
        if math.isfinite(value):
            values.append(value)
    if not values:
        return math.nan, math.nan
    low, high = np.percentile(values, [2.5, 97.5])
    return float(low), float(high)


def _rank_correlations(x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> dict[str, Any]:
    def rho(idx):
        return float(stats.spearmanr(x[idx], y[idx]).statistic)

    def tau(idx):
        return float(stats.kendalltau(x[idx], y[idx]).statistic)

    everything = np.arange(len(x))
    return {
        "spearman": Interval(rho(everything), *_bootstrap(rho, len(x), rng)).as_dict(),
        "kendall": Interval(tau(everything), *_bootstrap(tau, len(x), rng)).as_dict(),
        "n": len(x),
    }


def _folds(n: int, k: int, rng: np.random.Generator) -> list[np.ndarray]:
    order = rng.permutation(n)
    return [order[i::k] for i in range(min(k, n))]


def _quantile_map(train_x, train_y, test_x) -> np.ndarray:
    """Test scores onto the rating scale: each at its quantile among the training scores, then the
    training ratings' value at that quantile (rounded to the 1-5 scale). Oriented so that a metric that
    falls as ratings rise maps the right way round."""
    if stats.spearmanr(train_x, train_y).statistic < 0:
        train_x, test_x = -train_x, -test_x
    quantiles = np.searchsorted(np.sort(train_x), test_x, side="right") / len(train_x)
    mapped = np.quantile(train_y, np.clip(quantiles, 0.0, 1.0), method="inverted_cdf")
    return np.clip(np.rint(mapped), 1, 5)


def _zscore(train: np.ndarray, other: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean, std = train.mean(axis=0), train.std(axis=0)
    std[std == 0] = 1.0
    return (train - mean) / std, (other - mean) / std


def _ordinal_logit(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Weights w of the proportional-odds model P(y <= j) = sigmoid(t_j - x @ w), j = 1..4, fitted by
    maximum likelihood (the thresholds t are increasing: the first, then log-gaps), small L2 on all."""
    k = x.shape[1]

    def unpack(params):
        weights, first, gaps = params[:k], params[k], params[k + 1 :]
        return weights, np.concatenate([[first], first + np.cumsum(np.exp(gaps))])

    def loss(params):
        weights, thresholds = unpack(params)
        edges = np.concatenate([[-np.inf], thresholds, [np.inf]])
        latent = x @ weights
        upper = 1.0 / (1.0 + np.exp(-(edges[y] - latent)))
        lower = 1.0 / (1.0 + np.exp(-(edges[y - 1] - latent)))
        return float(-np.log(np.clip(upper - lower, 1e-12, None)).sum() + ORDINAL_L2 * params @ params)

    start = np.concatenate([np.zeros(k), [-1.5], np.zeros(LEVELS - 2)])
    return unpack(optimize.minimize(loss, start, method="L-BFGS-B").x)[0]


def _bradley_terry(differences: np.ndarray) -> np.ndarray:
    """Weights w maximising sum log sigmoid(d @ w) - L2 |w|^2 over the picks' (better - worse) rows."""

    def loss(w):
        margin = differences @ w
        return float(np.logaddexp(0.0, -margin).sum() + BT_L2 * w @ w)

    def grad(w):
        margin = differences @ w
        return -(differences.T @ (1.0 / (1.0 + np.exp(margin)))) + 2 * BT_L2 * w

    start = np.zeros(differences.shape[1])
    return optimize.minimize(loss, start, jac=grad, method="L-BFGS-B").x


def _score_block(names: list[str], weights: np.ndarray) -> dict[str, Any]:
    """The config's ``score:`` (weight and direction per metric), weights scaled to sum to 1."""
    total = float(np.abs(weights).sum()) or 1.0
    return {
        name: {"weight": round(abs(float(w)) / total, 4), "mode": "max" if w >= 0 else "min"}
        for name, w in zip(names, weights)
        if abs(w) / total >= 1e-4
    }


def _usable(table: ScoreTable, rows: np.ndarray) -> list[str]:
    """Metrics scored on every one of ``rows`` and not constant there."""
    return [
        name
        for name, values in table.metrics.items()
        if np.isfinite(values[rows]).all() and np.ptp(values[rows]) > 0
    ]


def calibrate(table: ScoreTable, ratings: Ratings, folds: int = 5, seed: int = 0) -> Calibration:
    rng = np.random.default_rng(seed)
    if ratings.kind == "likert":
        return _likert(table, ratings, folds, rng)
    return _pairwise(table, ratings, folds, rng)


def _likert(table: ScoreTable, ratings: Ratings, folds: int, rng: np.random.Generator) -> Calibration:
    index = table.index()
    by_image: dict[str, dict[str, int]] = defaultdict(dict)
    for image, rater, rating in ratings.likert:
        by_image[image][rater] = rating
    images = sorted(by_image, key=index.__getitem__)
    rows = np.array([index[i] for i in images])
    y = np.array([np.mean(list(by_image[i].values())) for i in images])

    metrics: dict[str, dict[str, Any]] = {}
    for name, values in table.metrics.items():
        x = values[rows]
        scored = np.isfinite(x)
        if scored.sum() < 3 or np.ptp(x[scored]) == 0:
            metrics[name] = {"n": int(scored.sum()), "skipped": "fewer than 3 rated images, or constant"}
            continue
        entry = _rank_correlations(x[scored], y[scored], rng)
        errors, baseline = [], []
        for test in _folds(int(scored.sum()), folds, rng):
            train = np.setdiff1d(np.arange(int(scored.sum())), test)
            xs, ys = x[scored], y[scored]
            errors.extend(np.abs(_quantile_map(xs[train], ys[train], xs[test]) - ys[test]))
            baseline.extend(np.abs(np.median(ys[train]) - ys[test]))
        entry["mapping"] = {"cv_mae": float(np.mean(errors)), "median_mae": float(np.mean(baseline))}
        metrics[name] = entry

    raters, skipped = _leave_one_out(by_image)
    result = Calibration("likert", len(images), len(ratings.likert), metrics, raters, skipped)
    names = _usable(table, rows)
    if names:
        x = np.stack([table.metrics[n][rows] for n in names], axis=1)
        # One observation per rating: the rated image's metrics and that rating.
        position = {image: i for i, image in enumerate(images)}
        observed = np.array([position[image] for image, _, _ in ratings.likert])
        levels = np.array([rating for _, _, rating in ratings.likert])
        predicted = np.empty(len(y))
        for test in _folds(len(y), folds, rng):
            train = np.setdiff1d(np.arange(len(y)), test)
            x_train, x_test = _zscore(x[train], x[test])
            z = np.empty_like(x)
            z[train], z[test] = x_train, x_test
            kept = np.isin(observed, train)
            weights = _ordinal_logit(z[observed[kept]], levels[kept])
            predicted[test] = x_test @ weights
        weights = _ordinal_logit(_zscore(x, x)[0][observed], levels)
        result.composite = {
            "metrics": names,
            "weights": [float(w) for w in weights],
            "cv_spearman": float(stats.spearmanr(predicted, y).statistic),
        }
        result.score_block = _score_block(names, weights)
    return result


def _leave_one_out(by_image: dict[str, dict[str, int]]) -> tuple[dict[str, float], dict[str, str]]:
    raters = sorted({r for ratings in by_image.values() for r in ratings})
    agreement, skipped = {}, {}
    for rater in raters:
        own, others = [], []
        for ratings in by_image.values():
            rest = [v for r, v in ratings.items() if r != rater]
            if rater in ratings and rest:
                own.append(ratings[rater])
                others.append(np.mean(rest))
        if len(own) < 2 or np.ptp(own) == 0 or np.ptp(others) == 0:
            skipped[rater] = f"{len(own)} image(s) rated by others too, or no spread: no agreement to measure"
            continue
        agreement[rater] = float(stats.spearmanr(own, others).statistic)
    return agreement, skipped


def _pairwise(table: ScoreTable, ratings: Ratings, folds: int, rng: np.random.Generator) -> Calibration:
    index = table.index()
    better = np.array([index[b] for b, _, _ in ratings.picks])
    worse = np.array([index[w] for _, w, _ in ratings.picks])
    metrics: dict[str, dict[str, Any]] = {}
    for name, values in table.metrics.items():
        a, b = values[better], values[worse]
        scored = np.isfinite(a) & np.isfinite(b) & (a != b)
        if scored.sum() < 3:
            metrics[name] = {"n": int(scored.sum()), "skipped": "fewer than 3 picks it can order"}
            continue
        agree = (a[scored] > b[scored]).astype(float)
        low, high = _bootstrap(lambda idx, agree=agree: float(agree[idx].mean()), len(agree), rng)
        metrics[name] = {"agreement": Interval(float(agree.mean()), low, high).as_dict(), "n": len(agree)}
    result = Calibration("pairwise", len(set(better) | set(worse)), len(ratings.picks), metrics)
    rows = np.union1d(better, worse)
    names = _usable(table, rows)
    if names:
        x = np.stack([table.metrics[n] for n in names], axis=1)
        z = _zscore(x[rows], x)[1]
        differences = z[better] - z[worse]
        correct = []
        for test in _folds(len(differences), folds, rng):
            train = np.setdiff1d(np.arange(len(differences)), test)
            weights = _bradley_terry(differences[train])
            correct.extend(differences[test] @ weights > 0)
        weights = _bradley_terry(differences)
        result.composite = {
            "metrics": names,
            "weights": [float(w) for w in weights],
            "cv_accuracy": float(np.mean(correct)),
        }
        result.score_block = _score_block(names, weights)
    return result
