"""The configs in configs/ are valid, tiny.yaml is the demo's config, and the DreamBooth example trains,
validates, checkpoints and resumes on the tiny world."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from sdcallbacks.config import load_config
from sdcallbacks.metrics import build_metrics
from sdcallbacks.outputs import read_metrics
from sdcallbacks.selection.checks import check_config

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))


@pytest.fixture(scope="module")
def user_folders(tmp_path_factory, astronaut):
    """What the shipped configs ask the user to point at: reference photos, and a tiny-world layout."""
    from sdcallbacks.testing.backbones import write_laion_head, write_tiny_open_clip
    from sdcallbacks.testing.tagger import write_tagger

    root = tmp_path_factory.mktemp("user")
    (root / "photos").mkdir()
    astronaut.save(root / "photos" / "astronaut.png")
    world = root / "world"
    write_tagger(world / "tagger")
    write_tiny_open_clip(world / "clip")
    write_laion_head(world / "laion_head.pth")
    return root


REFERENCE_VARIABLES = ("FACE_REFERENCES", "CHARACTER_REFERENCES", "STYLE_REFERENCES")


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_validate(path, monkeypatch, tmp_path, user_folders):
    # As a user runs them: online, their hub ids are not looked up (offline they must be in the hub cache).
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("SDCALLBACKS_OFFLINE", raising=False)
    monkeypatch.setenv("SDCALLBACKS_TINY_WORLD", str(user_folders / "world"))
    for name in REFERENCE_VARIABLES:
        monkeypatch.setenv(name, str(user_folders / "photos"))
    config = load_config(path)
    config.output_dir = tmp_path / "out"
    check_config(config, build_metrics(config.metrics.enabled()))  # builds only: nothing downloads


@pytest.mark.parametrize("path", [p for p in CONFIGS if p.stem != "tiny"], ids=lambda p: p.name)
def test_shipped_configs_name_a_missing_reference_folder(path, monkeypatch, tmp_path, capsys):
    from sdcallbacks.cli import main

    for name in REFERENCE_VARIABLES:
        monkeypatch.setenv(name, str(tmp_path / "not_there"))
    assert main(["check-config", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"references: reference images: {tmp_path / 'not_there'} is not a folder" in err


def test_named_configs_exist_with_their_monitors(monkeypatch):
    for name in REFERENCE_VARIABLES:
        monkeypatch.setenv(name, "/data/refs")
    monitors = {p.stem: load_config(p).monitor for p in CONFIGS if p.stem != "tiny"}
    assert monitors == {
        "anime_character": "val/score",
        "dreambooth_face": "val/identity/mean",
        "style_lora": "val/style_loss/mean",
    }
    anime = load_config(ROOT / "configs" / "anime_character.yaml").metrics
    assert (
        anime.tag_accuracy.model == "SmilingWolf/wd-v1-4-moat-tagger-v2"
        and anime.tag_accuracy.threshold == 0.35
    )


def test_tiny_yaml_is_the_demo_config(tiny_world, monkeypatch):
    from sdcallbacks.demo import demo_config

    monkeypatch.setenv("SDCALLBACKS_TINY_WORLD", str(tiny_world.root))
    from_file = load_config(ROOT / "configs" / "tiny.yaml").model_dump(exclude={"output_dir"})
    in_code = demo_config(tiny_world, Path("x"), validate_every=100).model_dump(exclude={"output_dir"})
    assert from_file == in_code


def test_unset_variable_in_a_config_is_located(tmp_path, monkeypatch):
    from sdcallbacks.config import ConfigError

    monkeypatch.delenv("SDCALLBACKS_TINY_WORLD", raising=False)
    with pytest.raises(
        ConfigError, match=r"metrics\.tag_accuracy\.model: \$\{SDCALLBACKS_TINY_WORLD\} is used"
    ):
        load_config(ROOT / "configs" / "tiny.yaml")


def run_example(*args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, str(ROOT / "examples" / "train_dreambooth_lora.py"), "--tiny_world", *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-5000:]
    return done


def test_dreambooth_example_trains_validates_and_resumes_on_the_tiny_world(tiny_world, tmp_path):
    out = tmp_path / "run"
    common = [
        "--output_dir",
        str(out),
        "--validate_every",
        "2",
        "--checkpointing_steps",
        "2",
        "--report_to",
        "none",
    ]
    first = run_example(*common, "--max_train_steps", "4")
    assert "best step" in first.stdout
    assert (out / "pytorch_lora_weights.safetensors").is_file() and (out / "checkpoint-4").is_dir()
    run_example(*common, "--max_train_steps", "6", "--resume_from_checkpoint", "latest")
    aggregates = [r for r in read_metrics(out / "validation" / "metrics.jsonl") if r["type"] == "aggregate"]
    # one baseline, then every 2 steps; the resume step (4) is not validated again
    assert [(a["step"], a["variant"]) for a in aggregates] == [
        (0, "base"),
        (2, "model"),
        (4, "model"),
        (6, "model"),
    ]
    best = list((out / "validation" / "checkpoints").glob("step_*/pytorch_lora_weights.safetensors"))
    assert len(best) == 1


@pytest.mark.parametrize("family", ["sd15", "sdxl", "sd3", "flux"])
def test_the_example_runs_offline_for_each_family_and_its_best_lora_loads(family, tiny_world, tmp_path):
    """Issue 13's line, ``--tiny_world --family F --max_train_steps 20``: the baseline and a later
    validation, metrics.jsonl, a best checkpoint whose printed path a fresh pipeline of the family loads."""
    import re

    import diffusers

    from sdcallbacks.testing.families import family_pipeline

    out = tmp_path / family
    done = run_example(
        "--family", family, "--max_train_steps", "20", "--output_dir", str(out), "--report_to", "none"
    )
    aggregates = [r for r in read_metrics(out / "validation" / "metrics.jsonl") if r["type"] == "aggregate"]
    assert [(a["step"], a["variant"]) for a in aggregates] == [(0, "base"), (20, "model")]
    best = Path(re.search(r"at (\S+); stopping reason", done.stdout).group(1))
    assert best.parent == out / "validation" / "checkpoints"
    pipelines = {"sd15": "StableDiffusionPipeline", "sdxl": "StableDiffusionXLPipeline"}
    pipelines |= {"sd3": "StableDiffusion3Pipeline", "flux": "FluxPipeline"}
    pipe = getattr(diffusers, pipelines[family]).from_pretrained(family_pipeline(family, tiny_world))
    pipe.load_lora_weights(best)
    denoiser = pipe.transformer if family in ("sd3", "flux") else pipe.unet
    assert any("lora" in name for name, _ in denoiser.named_parameters())


def test_the_tiny_worlds_concept_reads_as_dreambooth_and_imagefolder_data(tiny_world):
    """diffusers' DreamBooth scripts open every file of ``--instance_data_dir`` as an image (a
    ``metadata.jsonl`` there fails them); text_to_image reads an ``imagefolder`` (``metadata.jsonl`` whose
    ``file_name`` entries are paths under it). The concept serves both."""
    import json

    from PIL import Image

    images = sorted(tiny_world.concept_images_dir.iterdir())  # what DreamBoothDataset does
    assert len(images) == 16
    for path in images:
        with Image.open(path) as image:
            image.verify()
    rows = [json.loads(line) for line in (tiny_world.concept_dir / "metadata.jsonl").read_text().splitlines()]
    assert sorted(tiny_world.concept_dir / row["file_name"] for row in rows) == images
    assert {row["text"] for row in rows} == {"yellow square, white background"}
    assert [path for path, _ in tiny_world.concept_samples()] == images
