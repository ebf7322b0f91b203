from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from sdcallbacks.config import PromptDefaults, PromptEntry, TagAccuracyConfig
from sdcallbacks.metrics import METRICS, build_metrics
from sdcallbacks.metrics.backbones.wd14 import WD14Tagger, preprocess_wd14
from sdcallbacks.metrics.tagging import TagAccuracy, prompt_tags
from sdcallbacks.prompts import expand_jobs, resolve_prompts
from sdcallbacks.testing.shapes import draw_square
from sdcallbacks.weights import WeightsNotFoundError


@pytest.mark.parametrize(
    ("prompt", "tags"),
    [
        ("(red hair:1.2), ((blue eyes)), [smile], {hat}", ["red_hair", "blue_eyes", "smile", "hat"]),
        ("skadi \\(arknights\\), 1girl", ["skadi_(arknights)", "1girl"]),
        ("<lora:myface:0.8>, sks person, masterpiece", ["sks_person", "masterpiece"]),
        ("Red Hair, red hair, red_hair", ["red_hair"]),
        ("^_^, >_<, o_o", ["^_^", ">_<", "o_o"]),
        ("", []),
        (" , ,, ", []),
        ("A photo of a dog on a bench", ["a_photo_of_a_dog_on_a_bench"]),
        ("(unbalanced, tag:1.1)", ["unbalanced", "tag"]),
    ],
)
def test_prompt_tag_normalisation(prompt, tags):
    assert prompt_tags(prompt) == tags


def reference_wd14(image: Image.Image, size: int) -> np.ndarray:
    """An independent re-derivation of the Space's steps, in numpy where possible."""
    rgba = np.asarray(image.convert("RGBA"), dtype=np.float64)
    alpha = rgba[..., 3:] / 255.0
    rgb = rgba[..., :3] * alpha + 255.0 * (1 - alpha)
    rgb = Image.fromarray(np.round(rgb).astype(np.uint8))
    w, h = rgb.size
    side = max(w, h)
    canvas = np.full((side, side, 3), 255, dtype=np.uint8)
    top, left = (side - h) // 2, (side - w) // 2
    canvas[top : top + h, left : left + w] = np.asarray(rgb)
    out = Image.fromarray(canvas)
    if side != size:
        out = out.resize((size, size), Image.BICUBIC)
    return np.asarray(out, dtype=np.float32)[..., [2, 1, 0]]


def test_wd14_preprocessing_matches_rederivation_on_rgba_and_non_square():
    rng = np.random.default_rng(0)
    rgba = Image.fromarray(rng.integers(0, 256, (30, 50, 4), dtype=np.uint8), "RGBA")
    tall = Image.fromarray(rng.integers(0, 256, (61, 20, 3), dtype=np.uint8), "RGB")
    for image in (rgba, tall):
        got = preprocess_wd14(image, 64)
        assert got.shape == (64, 64, 3) and got.dtype == np.float32
        assert np.abs(got - reference_wd14(image, 64)).max() <= 1.0  # alpha rounding at most 1 level
    # white padding, BGR order, 0..255 floats
    red = Image.new("RGB", (10, 20), (255, 0, 0))
    out = preprocess_wd14(red, 20)
    np.testing.assert_array_equal(out[10, 0], [255, 255, 255])
    np.testing.assert_array_equal(out[10, 10], [0, 0, 255])


def test_sixteen_bit_and_grayscale_images_are_accepted():
    deep = Image.fromarray(np.full((8, 8), 65535, dtype=np.uint16))
    assert deep.mode.startswith("I")
    assert preprocess_wd14(deep, 8).min() == 255.0
    assert preprocess_wd14(Image.new("L", (8, 8), 0), 8).max() == 0.0


def jobs_for(*prompts):
    return expand_jobs(
        resolve_prompts([PromptEntry(prompt=p) for p in prompts], PromptDefaults(num_images=1), 0)
    )


def test_tag_accuracy_on_the_colour_tagger(tagger_dir):
    rng = np.random.default_rng(0)
    metric = TagAccuracy(TagAccuracyConfig(model=str(tagger_dir)))
    images = [
        draw_square("red", "white", 32, rng),
        draw_square("red", "white", 32, rng),
        draw_square("blue", "black", 32, rng),
        draw_square("red", "white", 32, rng),
    ]
    jobs = jobs_for(
        "red square, white background, masterpiece",  # all in-vocabulary tags drawn; 1 of 3 OOV
        "blue square, white background",  # half right
        "sks, masterpiece",  # nothing in vocabulary: skipped, not 0
        "red square, red square",  # duplicates count once
    )
    scores = metric.score(images, jobs)
    assert scores["tag_accuracy"] == [1.0, 0.5, None, 1.0]
    assert scores["tag_accuracy/oov_rate"][0] == pytest.approx(1 / 3)
    assert scores["tag_accuracy/oov_rate"][2] == 1.0
    assert scores["tag_accuracy/precision"][1] == 0.5  # predicted red + white, one was asked
    assert scores["tag_accuracy/f1"][1] == 0.5
    assert scores["tag_accuracy/precision"][3] == 0.5  # white background predicted but not asked
    assert set(metric.output_keys()) | set(metric.detail_keys) == set(scores)
    # Per image, which of its prompt's known tags were found, in prompt order (duplicates once).
    assert scores["tag_accuracy/tags"] == [
        {"tags": ["red_square", "white_background"], "found": [True, True]},
        {"tags": ["blue_square", "white_background"], "found": [False, True]},
        {"tags": [], "found": []},
        {"tags": ["red_square"], "found": [True]},
    ]


def test_tagger_rejects_a_csv_that_does_not_match(tagger_dir, tmp_path):
    import shutil

    shutil.copy(tagger_dir / "model.onnx", tmp_path / "model.onnx")
    (tmp_path / "selected_tags.csv").write_text("tag_id,name,category,count\n1,a,0,1\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"selected_tags\.csv lists 1 tags"):
        WD14Tagger(str(tmp_path)).load()
    (tmp_path / "selected_tags.csv").write_text("tag_id,name,category,count\n1,a,zero,1\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"selected_tags.csv:2: category must be an integer"):
        WD14Tagger(str(tmp_path)).load()


def test_missing_weights_give_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty_cache"))
    with pytest.raises(WeightsNotFoundError) as info:
        WD14Tagger("SmilingWolf/wd-v1-4-moat-tagger-v2").load()
    message = str(info.value)
    assert (
        "model.onnx" in message and "SmilingWolf/wd-v1-4-moat-tagger-v2" in message and "download" in message
    )
    with pytest.raises(WeightsNotFoundError, match=r"has no model\.onnx"):
        WD14Tagger(str(tmp_path)).load()


def test_registry_builds_enabled_metrics_lazily(tagger_dir):
    assert METRICS["tag_accuracy"] is TagAccuracy
    (metric,) = build_metrics({"tag_accuracy": TagAccuracyConfig(model="/nonexistent")})  # no load yet
    with pytest.raises(WeightsNotFoundError, match="nonexistent"):  # the first use loads
        metric.score([Image.new("RGB", (8, 8))], jobs_for("red square"))
    with pytest.raises(KeyError, match="unknown metric"):
        build_metrics({"nope": TagAccuracyConfig()})


def test_character_tags_are_held_to_character_threshold(tagger_dir, tmp_path):
    """A tag whose CSV category is 4 (character) is predicted above ``character_threshold``, whatever
    ``threshold`` (general tags) says; the same tag as a general tag follows ``threshold``."""
    import shutil

    image = Image.new("RGB", (64, 64), (255, 255, 255))
    image.paste((220, 30, 30), (0, 0, 16, 15))  # a small red patch: the tag's probability is not saturated
    tagger = WD14Tagger(str(tagger_dir))
    p = float(tagger.embed([image])[0, tagger.vocabulary.index["red_square"]])
    assert 0.1 < p < 0.9, p
    character = tmp_path / "character"
    shutil.copytree(tagger_dir, character)
    csv_path = character / "selected_tags.csv"
    lines = csv_path.read_text(encoding="utf-8").splitlines()
    lines = [line.replace(",red_square,0,", ",red_square,4,") for line in lines]
    csv_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    jobs = jobs_for("red square")

    def recall(folder, threshold, character_threshold):
        config = TagAccuracyConfig(
            model=str(folder), threshold=threshold, character_threshold=character_threshold
        )
        return TagAccuracy(config).score([image], jobs)["tag_accuracy"][0]

    assert recall(tagger_dir, p - 0.05, p + 0.05) == 1.0  # general: threshold
    assert recall(tagger_dir, p + 0.05, p - 0.05) == 0.0
    assert recall(character, p + 0.05, p - 0.05) == 1.0  # character: character_threshold
    assert recall(character, p - 0.05, p + 0.05) == 0.0
