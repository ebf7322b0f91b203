"""``sdcallbacks taggers``: WD14-format taggers compared on images whose tags are known, to choose the one
behind ``tag_accuracy``.

Per image, with G the known tags and T a tagger's tags above threshold (general and character tags;
ratings never), correct = |T ∩ G| and wrong = |T \\ G|:

* ``score`` = (correct − wrong) / |G|, the tagger-showdown score (1 is perfect; a tag the tagger adds
  costs as much as one it finds);
* ``precision`` = correct / |T| (0 when it predicts nothing), ``recall`` = correct / |G|, ``f1``;
* each averaged over the images; ``s_per_image``: tagging time per image, model loading excluded.

A known tag outside a tagger's vocabulary counts as missed: the comparison is of what each tagger can say.
"""

from __future__ import annotations

import csv
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from PIL import Image

from sdcallbacks.config.loading import ConfigError
from sdcallbacks.metrics.backbones.wd14 import WD14Tagger, tags_above
from sdcallbacks.metrics.tagging.tags import prompt_tags


@dataclass
class TaggerScores:
    tagger: str
    score: float
    precision: float
    recall: float
    f1: float
    s_per_image: float
    images: int


def read_known_tags(path: Path, images: Path) -> dict[Path, list[str]]:
    """Known tags per image, from a CSV with ``file`` and ``tags`` columns (tags comma-separated, as in a
    caption) or JSON lines ``{"file": ..., "tags": "a, b" or ["a", "b"]}``; files relative to ``images``.
    Tags are normalised as prompts are (``long hair`` and ``long_hair`` are one tag)."""
    if not path.is_file():
        raise ConfigError(path, ["tags file not found"])
    rows: list[tuple[int, object, object]] = []
    if path.suffix.lower() == ".csv":
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            if not {"file", "tags"} <= set(reader.fieldnames or ()):
                raise ConfigError(path, ["expected the columns file,tags"])
            rows = [(number, row["file"], row["tags"]) for number, row in enumerate(reader, start=2)]
    else:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError:
                raise ConfigError(path, [f"line {number}: not JSON"]) from None
            if not isinstance(row, dict):
                raise ConfigError(path, [f"line {number}: expected an object with 'file' and 'tags'"])
            rows.append((number, row.get("file"), row.get("tags")))
    known: dict[Path, list[str]] = {}
    problems = []
    for number, file, tags in rows:
        if not file or tags is None:
            problems.append(f"line {number}: expected 'file' and 'tags'")
            continue
        image = images / str(file)
        if not image.is_file():
            problems.append(f"line {number}: {file}: no such image in {images}")
            continue
        names = prompt_tags(", ".join(map(str, tags)) if isinstance(tags, list) else str(tags))
        if not names:
            problems.append(f"line {number}: {file}: no tags")
            continue
        known[image] = names
    if problems:
        raise ConfigError(path, problems)
    if not known:
        raise ConfigError(path, ["no images listed"])
    return known


def score_tagger(
    source: str,
    known: dict[Path, list[str]],
    *,
    threshold: float = 0.35,
    character_threshold: float = 0.85,
    device: str = "cpu",
) -> TaggerScores:
    tagger = WD14Tagger(source, device)
    tagger.ensure_loaded()
    paths = list(known)
    images = []
    for path in paths:
        with Image.open(path) as image:
            images.append(image.copy())  # the tagger's own preprocessing composites alpha onto white
    start = time.perf_counter()
    probabilities = tagger.embed(images).numpy()  # batched at the tagger's batch size
    elapsed = time.perf_counter() - start
    predicted = tags_above(probabilities, tagger.vocabulary, threshold, character_threshold)
    totals = {"score": 0.0, "precision": 0.0, "recall": 0.0, "f1": 0.0}
    for path, tags in zip(paths, predicted):
        truth = set(known[path])
        correct, wrong = len(tags & truth), len(tags - truth)
        precision = correct / len(tags) if tags else 0.0
        recall = correct / len(truth)
        totals["score"] += (correct - wrong) / len(truth)
        totals["precision"] += precision
        totals["recall"] += recall
        totals["f1"] += 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    n = len(paths)
    return TaggerScores(source, **{k: v / n for k, v in totals.items()}, s_per_image=elapsed / n, images=n)


def compare_taggers(
    images: Path,
    tags_file: Path,
    taggers: list[str],
    *,
    threshold: float = 0.35,
    character_threshold: float = 0.85,
    device: str = "cpu",
) -> list[TaggerScores]:
    """Every tagger on the images of ``tags_file``, best score first."""
    known = read_known_tags(tags_file, images)
    results = [
        score_tagger(t, known, threshold=threshold, character_threshold=character_threshold, device=device)
        for t in taggers
    ]
    return sorted(results, key=lambda r: -r.score)


def to_markdown(results: list[TaggerScores]) -> str:
    lines = [
        "| tagger | score | precision | recall | F1 | s/image | images |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        lines.append(
            f"| {r.tagger} | {r.score:.4f} | {r.precision:.4f} | {r.recall:.4f} | {r.f1:.4f} | "
            f"{r.s_per_image:.4f} | {r.images} |"
        )
    return "\n".join(lines)


def write_results(results: list[TaggerScores], path: Path) -> None:
    """``.json`` (a list of rows) or ``.csv``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [asdict(r) for r in results]
    if path.suffix.lower() == ".json":
        path.write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
        return
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
