"""``sdcallbacks calibrate``: synthetic ratings with a known relation to the metrics (the scores file is a
``metrics.jsonl`` as the callback writes it), recovered within their confidence intervals; picks from
known weights give back their order; bad ratings files are errors naming the line."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import yaml
from scipy import stats

from sdcallbacks.calibration import calibrate, read_ratings, read_scores
from sdcallbacks.cli import main
from sdcallbacks.config import validate_config

CUTS = (-1.2, -0.4, 0.4, 1.2)  # latent taste -> 1..5


def _likert(latent: np.ndarray) -> np.ndarray:
    return np.digitize(latent, CUTS) + 1


def _scores_file(folder, metrics: dict[str, np.ndarray]):
    """A run's metrics.jsonl: one image record per image, scores by metric."""
    folder.mkdir(parents=True, exist_ok=True)
    n = len(next(iter(metrics.values())))
    lines = []
    for i in range(n):
        record = {
            "type": "image",
            "step": 100,
            "variant": "model",
            "image_path": str(folder / "samples" / "step_0000100" / f"p_s{i}.png"),
            "scores": {name: float(values[i]) for name, values in metrics.items()},
        }
        lines.append(json.dumps(record))
    path = folder / "metrics.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def _write_csv(path, header, rows):
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def test_likert_ratings_with_a_known_correlation_are_recovered_within_the_ci(tmp_path, capsys):
    rng = np.random.default_rng(7)
    n = 300
    taste = rng.normal(size=n)
    # The rater's rating follows clip_score through noise; aesthetic is unrelated to it.
    metrics = {"clip_score": taste + rng.normal(scale=0.8, size=n), "aesthetic_laion": rng.normal(size=n)}
    scores = _scores_file(tmp_path / "run", metrics)
    rows = []
    for rater, noise in (("ann", 0.3), ("bob", 0.5)):
        ratings = _likert(taste + rng.normal(scale=noise, size=n))
        rows += [(f"samples/step_0000100/p_s{i}.png", int(r), rater) for i, r in enumerate(ratings)]
    rows.append(("samples/step_0000100/p_s0.png", 3, "cid"))  # a rater with one rating
    ratings_file = _write_csv(tmp_path / "ratings.csv", ["image", "rating", "rater"], rows)

    table = read_scores(scores)
    ratings = read_ratings(ratings_file, set(table.ids))
    result = calibrate(table, ratings, seed=0)

    # The population Spearman between clip_score and the mean rating of the two raters, from a million
    # draws of the same process: the sample's 95% CI covers it. Aesthetic's is near 0.
    big = np.random.default_rng(99)
    t = big.normal(size=1_000_000)
    mean_rating = (
        _likert(t + big.normal(scale=0.3, size=t.size)) + _likert(t + big.normal(scale=0.5, size=t.size))
    ) / 2
    truth = stats.spearmanr(t + big.normal(scale=0.8, size=t.size), mean_rating).statistic
    clip = result.metrics["clip_score"]
    assert clip["spearman"]["ci_low"] < truth < clip["spearman"]["ci_high"], (truth, clip["spearman"])
    aesthetic = result.metrics["aesthetic_laion"]
    assert abs(aesthetic["spearman"]["value"]) < 0.15 and aesthetic["spearman"]["ci_low"] < 0.1
    # Kendall's tau is scipy's on the same pairs.
    mean_of = {}
    for image, rating, _ in rows:  # every rater's rating counts, the one-rating rater's too
        mean_of.setdefault(image, []).append(rating)
    y = np.array([np.mean(mean_of[f"samples/step_0000100/p_s{i}.png"]) for i in range(n)])
    assert clip["kendall"]["value"] == pytest.approx(stats.kendalltau(metrics["clip_score"], y).statistic)
    # The mapping onto 1-5 beats answering the median; the unrelated metric's does not.
    assert clip["mapping"]["cv_mae"] < clip["mapping"]["median_mae"]
    assert aesthetic["mapping"]["cv_mae"] >= aesthetic["mapping"]["median_mae"] * 0.95
    # Raters agree with each other more than the noisy metric agrees with them; the one-rating rater is
    # skipped, and said to be.
    assert set(result.raters) == {"ann", "bob"} and min(result.raters.values()) > clip["spearman"]["value"]
    assert "cid" in result.skipped_raters
    # The fitted composite leans on clip_score, and is a score block the run config accepts.
    block = result.score_block
    assert block["clip_score"]["mode"] == "max" and block["clip_score"]["weight"] > 0.8
    assert result.composite["cv_spearman"] > 0.5

    out = tmp_path / "calibration"
    assert (
        main(["calibrate", "--ratings", str(ratings_file), "--scores", str(scores), "--out", str(out)]) == 0
    )
    printed = capsys.readouterr().out
    assert "| clip_score |" in printed and "skipped rater cid" in printed
    written = yaml.safe_load((out / "score.yaml").read_text())
    config = validate_config(
        {"metrics": {"clip_score": {}, "aesthetic_laion": {}}, "prompts": [{"prompt": "x"}], **written}
    )
    assert config.monitor == "val/score" and set(config.score) <= {"clip_score", "aesthetic_laion"}
    assert json.loads((out / "calibration.json").read_text())["kind"] == "likert"


def test_a_bradley_terry_fit_on_picks_from_known_weights_recovers_their_order(tmp_path):
    rng = np.random.default_rng(3)
    n, picks = 200, 3000
    names = ("tag_accuracy", "clip_score", "aesthetic_laion", "diversity_clip")
    weights = np.array([2.0, 1.0, -0.6, 0.2])  # the person dislikes what aesthetic_laion likes
    x = rng.normal(size=(n, len(names)))
    utility = x @ weights
    scores = _scores_file(tmp_path / "run", {name: x[:, k] for k, name in enumerate(names)})
    rows = []
    for _ in range(picks):
        a, b = rng.choice(n, size=2, replace=False)
        first_wins = rng.random() < 1 / (1 + np.exp(-(utility[a] - utility[b])))
        better, worse = (a, b) if first_wins else (b, a)
        rows.append((f"samples/step_0000100/p_s{better}.png", f"samples/step_0000100/p_s{worse}.png"))
    ratings_file = _write_csv(tmp_path / "picks.csv", ["better", "worse"], rows)

    table = read_scores(scores)
    result = calibrate(table, read_ratings(ratings_file, set(table.ids)), seed=0)
    fitted = dict(zip(result.composite["metrics"], result.composite["weights"]))
    assert sorted(names, key=lambda m: -abs(fitted[m])) == list(names)  # 2 > 1 > 0.6 > 0.2
    assert fitted["aesthetic_laion"] < 0 and result.score_block["aesthetic_laion"]["mode"] == "min"
    assert result.composite["cv_accuracy"] > 0.75
    agreement = result.metrics["tag_accuracy"]["agreement"]
    assert agreement["ci_low"] > 0.5  # the strongest single metric orders most picks the same way


def test_bad_ratings_files_are_errors_naming_the_line(tmp_path, capsys):
    scores = _scores_file(tmp_path / "run", {"clip_score": np.arange(5.0)})
    image = "samples/step_0000100/p_s1.png"
    cases = {
        "unknown.csv": ([(image, 3), ("samples/nope.png", 2)], "line 3: unknown image id 'samples/nope.png'"),
        "range.csv": ([(image, 6)], "line 2: rating '6' is not an integer from 1 to 5"),
        "text.csv": ([(image, "good")], "line 2: rating 'good' is not an integer from 1 to 5"),
    }
    for name, (rows, message) in cases.items():
        path = _write_csv(tmp_path / name, ["image", "rating"], rows)
        assert (
            main(["calibrate", "--ratings", str(path), "--scores", str(scores), "--out", str(tmp_path)]) == 2
        )
        err = capsys.readouterr().err
        assert str(path) in err and message in err, err
    assert not (tmp_path / "score.yaml").exists()  # nothing written on bad input


def test_an_ordinal_fit_on_ratings_from_known_weights_recovers_them(tmp_path):
    """Ratings drawn from the proportional-odds model itself (logistic noise, four cut points): the fitted
    weights are the true ones (z-scoring leaves standard-normal metrics as they are)."""
    rng = np.random.default_rng(11)
    n = 1500
    names = ("clip_score", "aesthetic_laion", "tag_accuracy")
    truth = np.array([1.5, -0.7, 0.0])
    x = rng.normal(size=(n, 3))
    ratings = np.searchsorted([-2.0, -0.5, 0.5, 2.0], x @ truth + rng.logistic(size=n)) + 1
    scores = _scores_file(tmp_path / "run", {name: x[:, k] for k, name in enumerate(names)})
    rows = [(f"samples/step_0000100/p_s{i}.png", int(r)) for i, r in enumerate(ratings)]
    ratings_file = _write_csv(tmp_path / "ratings.csv", ["image", "rating"], rows)
    table = read_scores(scores)
    result = calibrate(table, read_ratings(ratings_file, set(table.ids)), seed=0)
    fitted = dict(zip(result.composite["metrics"], result.composite["weights"]))
    assert [fitted[n] for n in names] == pytest.approx(list(truth), abs=0.15)
    assert result.score_block["aesthetic_laion"]["mode"] == "min"


def test_without_a_usable_metric_no_score_block_is_written(tmp_path, capsys):
    """Every metric constant over the rated images: correlations are skipped, and no score.yaml (an empty
    score: with monitor val/score could not run) is written."""
    scores = _scores_file(tmp_path / "run", {"clip_score": np.full(6, 20.0)})
    rows = [(f"samples/step_0000100/p_s{i}.png", 1 + i % 5) for i in range(6)]
    ratings = _write_csv(tmp_path / "ratings.csv", ["image", "rating"], rows)
    out = tmp_path / "calibration"
    assert main(["calibrate", "--ratings", str(ratings), "--scores", str(scores), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| clip_score | skipped: fewer than 3 rated images, or constant" in printed
    assert "no composite fitted" in printed
    assert (out / "calibration.json").is_file() and not (out / "score.yaml").exists()
