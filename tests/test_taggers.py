"""``sdcallbacks taggers``: WD14-format taggers compared on images whose tags are known. The shapes world's
colour tagger reads drawn squares exactly, so it is a control that must score 1.0; a copy whose CSV swaps
two tag names makes known mistakes, whose scores are worked out by hand."""

from __future__ import annotations

import csv
import itertools
import json
import shutil

import numpy as np
import pytest

from sdcallbacks.cli import main
from sdcallbacks.tagger_comparison import compare_taggers
from sdcallbacks.testing.shapes import BACKGROUND_COLOURS, SQUARE_COLOURS, draw_square


@pytest.fixture
def dataset(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    rows = []
    for colour, background in itertools.product(SQUARE_COLOURS, BACKGROUND_COLOURS):
        name = f"{colour}_{background}.png"
        draw_square(colour, background, 64, rng).save(images / name)
        rows.append({"file": name, "tags": f"{colour} square, {background} background"})  # caption style
    tags = tmp_path / "tags.csv"
    with tags.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["file", "tags"])
        writer.writeheader()
        writer.writerows(rows)
    return images, tags


@pytest.fixture
def confused_tagger(tmp_path, tagger_dir):
    """The colour tagger with the names of red_square and blue_square swapped in its CSV."""
    folder = tmp_path / "confused"
    shutil.copytree(tagger_dir, folder)
    text = (folder / "selected_tags.csv").read_text()
    swapped = text.replace("red_square", "@").replace("blue_square", "red_square").replace("@", "blue_square")
    (folder / "selected_tags.csv").write_text(swapped)
    return folder


def test_the_control_scores_one_and_known_mistakes_score_as_worked_out(
    dataset, tagger_dir, confused_tagger, tmp_path, capsys
):
    images, tags = dataset
    out = tmp_path / "taggers.json"
    argv = ["taggers", "--images", str(images), "--tags", str(tags), "--out", str(out)]
    assert main([*argv, "--taggers", f"{confused_tagger},{tagger_dir}"]) == 0
    printed = capsys.readouterr().out
    assert "| tagger | score | precision | recall | F1 | s/image | images |" in printed
    control, confused = json.loads(out.read_text())
    assert control["tagger"] == str(tagger_dir)  # ranked first
    assert (control["score"], control["precision"], control["recall"], control["f1"]) == (1.0, 1.0, 1.0, 1.0)
    assert control["images"] == 10 and control["s_per_image"] > 0
    # 10 images; on the 4 with a red or blue square the confused tagger finds the background (correct) and
    # names the other square (wrong): score (1 - 1) / 2 = 0, precision = recall = F1 = 1/2.
    assert confused["score"] == pytest.approx(6 / 10)
    for key in ("precision", "recall", "f1"):
        assert confused[key] == pytest.approx((6 + 4 * 0.5) / 10)


def test_a_tags_file_naming_a_missing_image_is_an_error_naming_the_line(dataset, tagger_dir, capsys):
    images, tags = dataset
    with tags.open("a") as fh:
        fh.write("missing.png,red square\n")
    argv = ["taggers", "--images", str(images), "--tags", str(tags), "--taggers", str(tagger_dir)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert str(tags) in err and "line 12: missing.png: no such image" in err

    jsonl = tags.with_suffix(".jsonl")
    jsonl.write_text('{"file": "red_white.png", "tags": ["red square", "white_background"]}\n{"file": 3}\n')
    with pytest.raises(ValueError, match="line 2: expected 'file' and 'tags'"):
        compare_taggers(images, jsonl, [str(tagger_dir)])
    jsonl.write_text('{"file": "red_white.png", "tags": ["red square", "white_background"]}\n')
    [result] = compare_taggers(images, jsonl, [str(tagger_dir)])
    assert result.score == 1.0 and result.images == 1
