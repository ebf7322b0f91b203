"""The inputs of ``sdcallbacks calibrate``: the metrics' scores of images, and a person's ratings of them.

Scores come from any ``metrics.jsonl`` the callback, ``evaluate``, ``watch`` or ``sdcallbacks score`` wrote
(its ``image`` records). An image's id is its path relative to the folder of that file
(``samples/step_0000200/red_s1.png``), the id the ratings file uses.

Ratings are a CSV with a header, one of:

* ``image,rating[,rater]``: a 1-5 Likert rating of one image (several raters allowed);
* ``better,worse[,rater]``: a pairwise pick, the first image preferred.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sdcallbacks.config.loading import ConfigError
from sdcallbacks.outputs.writer import image_id, read_metrics


@dataclass
class ScoreTable:
    ids: list[str]
    metrics: dict[str, np.ndarray]  # metric -> one value per id (NaN: not scored)

    def index(self) -> dict[str, int]:
        return {image: i for i, image in enumerate(self.ids)}


@dataclass
class Ratings:
    likert: list[tuple[str, str, int]] = field(default_factory=list)  # (image, rater, 1..5)
    picks: list[tuple[str, str, str]] = field(default_factory=list)  # (better, worse, rater)

    @property
    def kind(self) -> str:
        return "likert" if self.likert else "pairwise"


def read_scores(path: Path) -> ScoreTable:
    """Per image, every primary metric (a score key without ``/``) of the ``image`` records."""
    if not path.is_file():
        raise ConfigError(path, ["scores file not found (expected a metrics.jsonl)"])
    try:
        records = [r for r in read_metrics(path) if isinstance(r, dict) and r.get("type") == "image"]
    except ValueError as err:
        raise ConfigError(path, [str(err)]) from None
    ids, values = [], []
    for record in records:
        ids.append(image_id(str(record.get("image_path", "")), path.parent))
        values.append(record.get("scores") or {})
    names = sorted({k for v in values for k in v if "/" not in k})
    if not ids or not names:
        raise ConfigError(path, ["no scored image records"])
    metrics = {name: np.array([_finite(v.get(name)) for v in values], dtype=np.float64) for name in names}
    return ScoreTable(ids, metrics)


def _finite(value: object) -> float:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else math.nan


def read_ratings(path: Path, known: set[str]) -> Ratings:
    """The ratings of ``path``; every problem (an unknown image id, a rating outside 1-5) is listed with
    its line, and none is dropped silently."""
    if not path.is_file():
        raise ConfigError(path, ["ratings file not found"])
    ratings = Ratings()
    problems = []
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        columns = set(reader.fieldnames or ())
        if {"image", "rating"} <= columns:
            kind = "likert"
        elif {"better", "worse"} <= columns:
            kind = "pairwise"
        else:
            raise ConfigError(path, ["expected the columns image,rating[,rater] or better,worse[,rater]"])
        for line, row in enumerate(reader, start=2):
            rater = (row.get("rater") or "rater").strip()
            images = [row["image"]] if kind == "likert" else [row["better"], row["worse"]]
            unknown = [i for i in images if (i or "").strip() not in known]
            if unknown:
                problems.append(f"line {line}: unknown image id {unknown[0]!r} (not in the scores file)")
                continue
            if kind == "pairwise":
                ratings.picks.append((row["better"].strip(), row["worse"].strip(), rater))
                continue
            try:
                rating = int(str(row["rating"]).strip())
            except ValueError:
                rating = 0
            if not 1 <= rating <= 5:
                problems.append(f"line {line}: rating {row['rating']!r} is not an integer from 1 to 5")
                continue
            ratings.likert.append((row["image"].strip(), rater, rating))
    if problems:
        raise ConfigError(path, problems)
    if not ratings.likert and not ratings.picks:
        raise ConfigError(path, ["no ratings"])
    return ratings
