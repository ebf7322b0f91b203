"""``sdcallbacks evaluate``: checkpoints of every trainer's naming and key format, scored with the validation
core against the base model; the callback's own logged values reproduced; resume; bad input."""

from __future__ import annotations

import contextlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from sdcallbacks import ValidationCallback, load_config
from sdcallbacks.aggregation.paired import paired_bootstrap
from sdcallbacks.checkpoints import CheckpointError, find_checkpoints, parse_position
from sdcallbacks.cli import main
from sdcallbacks.evaluation import evaluate
from sdcallbacks.outputs import read_metrics
from sdcallbacks.testing.modules import perturb_lora, tiny_lora_modules
from tests.helpers import one_thread, pipeline_of


@pytest.mark.parametrize(
    ("stem", "expected"),
    [
        ("checkpoint-500", (500, None)),  # diffusers' scripts
        ("step_0000100", (100, None)),  # sdcallbacks
        ("mylora-step00000500", (500, None)),  # kohya --save_every_n_steps
        ("mylora-000005", (None, 5)),  # kohya --save_every_n_epochs
        ("my_lora_000000500", (500, None)),  # ai-toolkit
        ("lora2024-01-02_03-04-05-save-500-3-20", (500, 3)),  # OneTrainer
        ("epoch-3", (None, 3)),
        ("final", (None, None)),
    ],
)
def test_the_step_or_epoch_of_each_trainers_names(stem, expected):
    assert parse_position(stem) == expected


def test_a_step_pattern_replaces_the_name_rules():
    assert parse_position("run7_e12_s3400", r"_s(?P<step>\d+)") == (3400, None)
    assert parse_position("run7_e12_s3400", r"_e(?P<epoch>\d+)") == (None, 12)
    assert parse_position("run7_e12_s3400", r"_s(\d+)") == (3400, None)
    assert parse_position("checkpoint-5", r"_s(\d+)") == (None, None)


def _lora_file(path, metadata=None):
    save_file(
        {"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.zeros(2, 2)}, path, metadata
    )


def test_discovery_reads_kohya_metadata_and_passes_over_what_is_not_a_checkpoint(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    _lora_file(run / "mylora-000002.safetensors", {"ss_steps": "250", "ss_epoch": "2"})
    _lora_file(run / "mylora-000001.safetensors")  # no metadata: the epoch from the name
    (run / "broken-000003.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    (run / "sample").mkdir()
    (run / "log.txt").write_text("loss 0.1")
    _lora_file(run / "final.safetensors")
    _lora_file(run / "mylora.safetensors", {"ss_steps": "250"})  # kohya's final save, at a saved step
    found = find_checkpoints([run])
    assert [(c.name, c.step, c.epoch) for c in found.checkpoints] == [
        ("mylora-000001.safetensors", None, 1),
        ("mylora-000002.safetensors", 250, 2),
    ]
    reasons = {path.name: why for path, why in found.skipped}
    assert set(reasons) == {
        "broken-000003.safetensors",
        "sample",
        "log.txt",
        "final.safetensors",
        "mylora.safetensors",
    }
    assert reasons["mylora.safetensors"] == "at the same step as mylora-000002.safetensors"
    assert "not a readable safetensors file" in reasons["broken-000003.safetensors"]
    assert "--step-pattern" in reasons["final.safetensors"]


def test_discovery_errors_name_the_source(tmp_path):
    with pytest.raises(CheckpointError, match="matches nothing"):
        find_checkpoints([str(tmp_path / "*.safetensors")])
    _lora_file(tmp_path / "a-step00000010.safetensors")
    _lora_file(tmp_path / "b_000000010.safetensors")
    with pytest.raises(CheckpointError, match="both at step 10"):
        find_checkpoints([tmp_path])
    with pytest.raises(CheckpointError, match=r'no checkpoint found.*--step-pattern "x\(\\d\+\)"'):
        find_checkpoints([tmp_path / "a-step00000010.safetensors"], step_pattern=r"x(\d+)")
    with pytest.raises(CheckpointError, match="not a regular expression"):
        find_checkpoints([tmp_path], step_pattern="(")


def test_the_paired_bootstrap_covers_a_known_difference_at_its_nominal_rate():
    """Synthetic paired scores with a true mean difference of 0.3: the 95% interval covers it in about 95%
    of 400 seeded experiments (binomial sd ~1.1 points; a bootstrap percentile interval runs slightly
    narrow at n=30)."""
    rng = np.random.default_rng(7)
    covered = 0
    for trial in range(400):
        shared = rng.normal(0, 1, 30)  # per-(prompt, seed) difficulty, common to both models
        first = shared + 0.3 + rng.normal(0, 0.5, 30)
        second = shared + rng.normal(0, 0.5, 30)
        pairs = [("p", s) for s in range(30)]
        result = paired_bootstrap(
            dict(zip(pairs, first)), dict(zip(pairs, second)), "k", resamples=2000, seed=trial
        )
        covered += result.ci_low <= 0.3 <= result.ci_high
    assert 0.90 <= covered / 400 <= 0.98
    # The flip rate follows the evidence: no overlap -> ~0; identical models -> about half.
    same = {("p", s): float(s) for s in range(10)}
    assert paired_bootstrap(same, same, "k").flip_rate == 1.0  # a tie is never "first is better"
    far = {p: v + 10 for p, v in same.items()}
    assert paired_bootstrap(far, same, "k").flip_rate == 0.0


# -- end to end, on checkpoints the callback saved ---------------------------------------------------


@pytest.fixture
def base_folder(tmp_path, clip_tokenizer):
    """A diffusers pipeline folder of the tiny SD architecture (random weights): the base model."""
    folder = tmp_path / "base"
    pipeline_of(tiny_lora_modules(clip_tokenizer, lora=False)).save_pretrained(folder)
    return folder


def _config(tmp_path, tagger_dir):
    config = {
        "output_dir": str(tmp_path / "train"),
        "seed": 3,
        "prompts": [
            {"name": "red", "prompt": "red square", "seeds": [1, 2]},
            {"name": "blue", "prompt": "blue square", "seeds": [3, 4]},
        ],
        "defaults": {"width": 32, "height": 32, "steps": 3, "guidance_scale": 3.0},
        "sampling": {"baseline": True},
        "schedule": {"every_n_steps": 2},
        "metrics": {"tag_accuracy": {"model": str(tagger_dir)}},
        "monitor": "val/tag_accuracy/mean",
        "checkpoint": {"save_top_k": -1},
    }
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    return path


def _train(base_folder, config_path, steps=6):
    """The callback over a LoRA on the base model's UNet, weights moved at every step, every validation
    kept (save_top_k -1); returns the callback and the live modules."""
    from diffusers import StableDiffusionPipeline
    from peft import LoraConfig

    from sdcallbacks.sampling.modules import TrainingModules

    pipe = StableDiffusionPipeline.from_pretrained(base_folder)
    modules = TrainingModules.from_components(pipe.components)
    modules.unet.add_adapter(
        LoraConfig(r=4, lora_alpha=4, init_lora_weights="gaussian", target_modules=["to_q", "to_k", "to_v"])
    )
    cb = ValidationCallback.from_config(load_config(config_path))
    cb.on_train_start(**vars(modules))
    for step in range(1, steps + 1):
        perturb_lora(modules, step, scale=0.5)
        cb.on_step_end(step)
    cb.on_train_end(steps)
    return cb, modules


def _logged(out):
    return {
        (r["step"], r["variant"]): r["values"]
        for r in read_metrics(out / "metrics.jsonl")
        if r["type"] == "aggregate"
    }


MEANS = ("val/tag_accuracy/mean", "val/tag_accuracy/precision/mean", "val/tag_accuracy/f1/mean")


def test_evaluate_reproduces_the_callbacks_logged_values_and_resumes(tmp_path, tagger_dir, base_folder):
    config_path = _config(tmp_path, tagger_dir)
    cb, _ = _train(base_folder, config_path)
    logged = _logged(tmp_path / "train")
    checkpoints = tmp_path / "train" / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["step_0000002", "step_0000004", "step_0000006"]

    out = tmp_path / "eval"
    first = evaluate(load_config(config_path), str(base_folder), [checkpoints / "step_000000[24]"], out)
    assert first.scored == ["base", "step_0000002", "step_0000004"] and first.reused == []
    result = evaluate(load_config(config_path), str(base_folder), [checkpoints], out)
    assert result.reused == ["base", "step_0000002", "step_0000004"] and result.scored == ["step_0000006"]

    rows = {row["name"]: row for row in result.leaderboard.rows}
    assert list(rows) == ["base", "step_0000002", "step_0000004", "step_0000006"]
    for key in MEANS:
        assert rows["base"][key] == pytest.approx(logged[(0, "base")][key], abs=1e-6)
        for step in (2, 4, 6):
            assert rows[f"step_{step:07d}"][key] == pytest.approx(logged[(step, "model")][key], abs=1e-6)
    # The images themselves: every checkpoint's drawn images equal the callback's, pixel for pixel.
    for step in (2, 4, 6):
        ours = sorted((out / "samples" / f"step_{step:07d}").glob("*.png"))
        theirs = sorted((tmp_path / "train" / "samples" / f"step_{step:07d}").glob("*.png"))
        assert [p.name for p in ours] == [p.name for p in theirs] and len(ours) == 5  # 4 images + grid
        for a, b in zip(ours, theirs):
            assert np.array_equal(np.asarray(_image(a)), np.asarray(_image(b))), a.name

    # The leaderboard: best by the monitor as the callback chose it, a paired comparison, the files.
    board = result.leaderboard
    assert board.best == f"step_{cb.best_step:07d}"
    assert board.comparison is not None and board.comparison.pairs == 4
    header = (out / "leaderboard.csv").read_text().splitlines()[0].split(",")
    assert {"name", "step", "val/tag_accuracy/mean", "val/tag_accuracy/ci_low", "z/tag_accuracy"} <= set(
        header
    )
    assert rows["base"]["z/tag_accuracy"] == 0.0
    saved = json.loads((out / "leaderboard.json").read_text())
    assert saved["best"] == board.best and len(saved["rows"]) == 4
    # Its report: the leaderboard with the best row marked, and a curve over the checkpoints' steps.
    from sdcallbacks.report import write_report

    page = write_report(out).html.read_text()
    assert "<h2>Leaderboard</h2>" in page and f"<tr class='best'><td>{board.best}</td>" in page
    assert all(f"<td>{name}</td>" in page for name in rows)

    # A crash while writing the store's last line: that checkpoint alone is scored again.
    store = out / "evaluations.jsonl"
    lines = store.read_text().splitlines(keepends=True)
    store.write_text("".join(lines[:-1]) + lines[-1][: len(lines[-1]) // 2])
    again = evaluate(load_config(config_path), str(base_folder), [checkpoints], out)
    assert again.scored == ["step_0000006"]


def _image(path):
    from PIL import Image

    return Image.open(path).convert("RGB")


def _kohya(state_dict_peft, path, step):
    from diffusers.utils import convert_state_dict_to_kohya

    kohya = convert_state_dict_to_kohya({f"unet.{k}": v for k, v in state_dict_peft.items()})
    save_file(kohya, path, metadata={"ss_steps": str(step), "ss_network_module": "networks.lora"})


def test_kohya_and_ai_toolkit_files_score_as_the_callbacks_folders(tmp_path, tagger_dir, base_folder):
    """The same LoRA weights as kohya key-format single files (sd-scripts names with ss_* metadata, ai-toolkit
    names), loaded by diffusers' own converter: the same images and values as the callback's folders."""
    from peft.utils import get_peft_model_state_dict

    config_path = _config(tmp_path, tagger_dir)
    _, modules = _train(base_folder, config_path, steps=2)
    logged = _logged(tmp_path / "train")
    run = tmp_path / "kohya_run"
    run.mkdir()
    _kohya(get_peft_model_state_dict(modules.unet), run / "mylora-000001.safetensors", step=2)  # epoch name
    shutil.copy(run / "mylora-000001.safetensors", tmp_path / "my_lora_000000002.safetensors")
    for source in ([run], [tmp_path / "my_lora_000000002.safetensors"]):
        out = tmp_path / f"eval_{source[0].name}"
        result = evaluate(load_config(config_path), str(base_folder), source, out)
        [row] = [r for r in result.leaderboard.rows if r["kind"] != "base"]
        assert row["step"] == 2
        for key in MEANS:
            assert row[key] == pytest.approx(logged[(2, "model")][key], abs=1e-6)
        drawn = sorted((out / "samples" / "step_0000002").glob("*.png"))
        trained = sorted((tmp_path / "train" / "samples" / "step_0000002").glob("*.png"))
        for a, b in zip(drawn, trained):
            assert np.array_equal(np.asarray(_image(a)), np.asarray(_image(b))), a.name


def test_checkpoints_that_cannot_be_scored_are_skipped_with_the_reason(
    tmp_path, tagger_dir, base_folder, monkeypatch
):
    config_path = _config(tmp_path, tagger_dir)
    _train(base_folder, config_path, steps=4)
    run = tmp_path / "train" / "checkpoints"
    other = "lora_unet_no_such_block"  # a LoRA of another architecture, in kohya's format
    save_file(
        {f"{other}.lora_down.weight": torch.zeros(4, 8), f"{other}.lora_up.weight": torch.zeros(8, 4)},
        run / "other-step00000005.safetensors",
    )
    (run / "torn-step00000007.safetensors").write_bytes(b"\xff" * 20)

    # The trainer rotates step 4 away while it is being scored.
    from sdcallbacks.checkpoints.loading import CheckpointSwap

    applied = CheckpointSwap.applied

    @contextlib.contextmanager
    def rotating(self, checkpoint):
        with applied(self, checkpoint):
            if checkpoint.step == 4:  # loaded, now being scored
                shutil.rmtree(checkpoint.path)
            yield

    monkeypatch.setattr(CheckpointSwap, "applied", rotating)
    out = tmp_path / "eval"
    result = evaluate(load_config(config_path), str(base_folder), [run], out)
    reasons = {s["path"].rsplit("/", 1)[-1]: s["reason"] for s in result.skipped}
    assert set(reasons) == {"other-step00000005.safetensors", "torn-step00000007.safetensors", "step_0000004"}
    assert f"LoRA of the sd base model {base_folder}" in reasons["other-step00000005.safetensors"]
    assert "not a readable safetensors file" in reasons["torn-step00000007.safetensors"]
    assert "removed or rewritten while it was being scored" in reasons["step_0000004"]
    assert [r["name"] for r in result.leaderboard.rows] == ["base", "step_0000002"]
    assert not (out / "samples" / "step_0000004").exists()  # nothing of a skipped checkpoint is written
    assert [r["name"] for r in json.loads((out / "leaderboard.json").read_text())["rows"]] == [
        "base",
        "step_0000002",
    ]


def test_the_command_prints_the_leaderboard_and_exits_2_on_bad_input(
    tmp_path, tagger_dir, base_folder, capsys
):
    config_path = _config(tmp_path, tagger_dir)
    _train(base_folder, config_path, steps=2)
    out = tmp_path / "eval"
    argv = ["evaluate", "--config", str(config_path), "--base", str(base_folder), "--out", str(out)]
    assert main([*argv, str(tmp_path / "train" / "checkpoints")]) == 0
    printed = capsys.readouterr().out
    assert "| best | step_0000002 | 2 |" in printed and "| base | base |" in printed
    assert (out / "leaderboard.csv").is_file() and (out / "leaderboard.md").is_file()
    assert main([*argv, str(tmp_path / "nothing-*.safetensors")]) == 2
    assert "matches nothing" in capsys.readouterr().err
    bad_base = ["evaluate", "--config", str(config_path), "--base", str(tmp_path), "--out", str(out)]
    assert main([*bad_base, str(tmp_path / "train" / "checkpoints")]) == 2
    assert "without model_index.json" in capsys.readouterr().err


@pytest.mark.parametrize("suffix", [".safetensors", ".ckpt"])
def test_a_single_file_base_model_scores_as_its_diffusers_folder(
    tmp_path, tagger_dir, base_folder, capsys, suffix
):
    """The base model as kohya and web UI users have it, one original-format file, read by diffusers'
    from_single_file with the configs of a local folder: every weight as in the folder, the same
    leaderboard; without the folder offline, a clear error that says what to pass."""
    from diffusers import StableDiffusionPipeline

    from sdcallbacks.checkpoints import load_base_pipeline
    from tests.original_format import write_single_file

    reference = StableDiffusionPipeline.from_pretrained(base_folder)
    single = write_single_file(reference, tmp_path / f"model{suffix}")
    loaded = load_base_pipeline(str(single), config=str(base_folder))
    assert type(loaded) is StableDiffusionPipeline
    for name in ("unet", "vae", "text_encoder"):
        ours, theirs = getattr(loaded, name).state_dict(), getattr(reference, name).state_dict()
        assert ours.keys() == theirs.keys(), name
        assert all(torch.equal(ours[k], theirs[k]) for k in ours), name

    config_path = _config(tmp_path, tagger_dir)
    _train(base_folder, config_path, steps=2)
    checkpoints = str(tmp_path / "train" / "checkpoints")
    boards = {}
    for name, base in (("folder", ["--base", str(base_folder)]), ("file", ["--base", str(single)])):
        extra = ["--base-config", str(base_folder)] if name == "file" else []
        argv = ["evaluate", "--config", str(config_path), *base, *extra, "--out", str(tmp_path / name)]
        assert main([*argv, checkpoints]) == 0
        boards[name] = json.loads((tmp_path / name / "leaderboard.json").read_text())["rows"]
    assert [r["name"] for r in boards["file"]] == ["base", "step_0000002"]
    for ours, theirs in zip(boards["file"], boards["folder"]):
        for key in MEANS:
            assert ours[key] == pytest.approx(theirs[key], abs=1e-6)
    capsys.readouterr()

    # Offline (the tests run with HF_HUB_OFFLINE=1) with no configs cached: what to pass instead.
    argv = ["evaluate", "--config", str(config_path), "--base", str(single), "--out", str(tmp_path / "x")]
    assert main([*argv, checkpoints]) == 2
    assert f"--base {single}: a single-file model" in capsys.readouterr().err
    assert main([*argv, "--base-config", str(tmp_path), checkpoints]) == 2
    assert f"--base-config {tmp_path}: no model_index.json" in capsys.readouterr().err
    lora = next((tmp_path / "train" / "checkpoints").rglob("*.safetensors"))
    with pytest.raises(CheckpointError, match=f"--base {lora}: from_single_file could not load it"):
        load_base_pipeline(str(lora), config=str(base_folder))


def test_the_issues_done_means_on_the_demos_output(tmp_path, tiny_world, monkeypatch, capsys):
    """``sdcallbacks demo --save-top-k -1``, then ``sdcallbacks evaluate --config configs/tiny.yaml --base
    <tiny world>/pipeline DIR/checkpoints --out EVAL``: one leaderboard row for the base model and one per
    checkpoint, and each checkpoint's tag accuracy equals the demo's logged value at that step."""
    import csv
    from pathlib import Path

    demo_dir, eval_dir = tmp_path / "demo", tmp_path / "eval"
    demo = ["demo", "--output-dir", str(demo_dir), "--steps", "40", "--validate-every", "20"]
    assert main([*demo, "--save-top-k", "-1", "--no-wandb", "--min-gain", "-1"]) == 0
    capsys.readouterr()
    monkeypatch.setenv("SDCALLBACKS_TINY_WORLD", str(tiny_world.root))
    config = Path(__file__).parent.parent / "configs" / "tiny.yaml"
    argv = ["evaluate", "--config", str(config), "--base", str(tiny_world.pipeline_dir)]
    assert main([*argv, str(demo_dir / "checkpoints"), "--out", str(eval_dir)]) == 0
    rows = list(csv.DictReader((eval_dir / "leaderboard.csv").open()))
    assert [(r["name"], r["step"]) for r in rows] == [
        ("base", ""),
        ("step_0000020", "20"),
        ("step_0000040", "40"),
    ]
    assert all(r["val/tag_accuracy/ci_low"] and r["val/tag_accuracy/ci_high"] for r in rows)
    logged = _logged(demo_dir)
    for row in rows[1:]:
        expected = logged[(int(row["step"]), "model")]["val/tag_accuracy/mean"]
        assert abs(float(row["val/tag_accuracy/mean"]) - expected) <= 1e-6
    assert abs(float(rows[0]["val/tag_accuracy/mean"]) - logged[(0, "base")]["val/tag_accuracy/mean"]) <= 1e-6


def test_full_denoiser_checkpoints_folders_and_single_files(tmp_path, tagger_dir, base_folder):
    """A full fine-tune: the callback's ``step_N/unet/`` folders, and the same weights as single files in
    diffusers' keys, copied into the base UNet and the base weights copied back between checkpoints."""
    from diffusers import StableDiffusionPipeline

    from sdcallbacks.sampling.modules import TrainingModules

    config_path = _config(tmp_path, tagger_dir)
    modules = TrainingModules.from_components(StableDiffusionPipeline.from_pretrained(base_folder).components)
    cb = ValidationCallback.from_config(load_config(config_path))
    cb.on_train_start(**vars(modules))
    files = tmp_path / "files"
    files.mkdir()
    for step in range(1, 5):
        with torch.no_grad():
            generator = torch.Generator().manual_seed(step)
            for param in modules.unet.parameters():
                param.add_(0.05 * torch.randn(param.shape, generator=generator))
        cb.on_step_end(step)
        if step % 2 == 0:
            save_file(
                {k: v.contiguous() for k, v in modules.unet.state_dict().items()},
                files / f"ft-step{step:08d}.safetensors",
            )
    cb.on_train_end(4)
    logged = _logged(tmp_path / "train")
    for source in (tmp_path / "train" / "checkpoints", files):
        result = evaluate(
            load_config(config_path), str(base_folder), [source], tmp_path / f"eval_{source.name}"
        )
        rows = {r["step"]: r for r in result.leaderboard.rows}
        assert [r["kind"] for r in result.leaderboard.rows] == ["base", "denoiser", "denoiser"]
        for step in (2, 4):
            for key in MEANS:
                assert rows[step][key] == pytest.approx(logged[(step, "model")][key], abs=1e-6)
        for key in MEANS:
            assert rows[None][key] == pytest.approx(logged[(0, "base")][key], abs=1e-6)
    # Between checkpoints the base weights are back, bit for bit.
    from sdcallbacks.checkpoints import CheckpointSwap, find_checkpoints, load_base_pipeline

    pipeline = load_base_pipeline(str(base_folder))
    swap = CheckpointSwap(pipeline, TrainingModules.from_components(pipeline.components), str(base_folder))
    before = {k: v.clone() for k, v in pipeline.unet.state_dict().items()}
    [checkpoint, _] = find_checkpoints([files]).checkpoints
    with swap.applied(checkpoint):
        assert not torch.equal(pipeline.unet.conv_in.weight, before["conv_in.weight"])
    assert all(torch.equal(v, before[k]) for k, v in pipeline.unet.state_dict().items())


def test_two_processes_give_the_same_leaderboard_as_one(tmp_path, tagger_dir, base_folder):
    """``sdcallbacks evaluate`` under torchrun with 2 CPU processes (gloo) against 1 (both one thread each, so
    the arithmetic is the same): checkpoints split one per process per round, published by the main
    process in training order; the same rows, values and files."""
    import os
    import subprocess

    import sdcallbacks
    from sdcallbacks.testing.launch import torchrun_command

    config_path = _config(tmp_path, tagger_dir)
    _train(base_folder, config_path, steps=6)  # three checkpoints: an odd number, one process idles
    checkpoints = tmp_path / "train" / "checkpoints"
    entry = Path(sdcallbacks.__file__).parent / "__main__.py"
    boards = {}
    for processes in (1, 2):
        out = tmp_path / f"processes_{processes}"
        argv = ["evaluate", "--config", str(config_path), "--base", str(base_folder), "--out", str(out)]
        if processes == 1:  # in this process, on one thread: a launched single process, less its start-up
            with one_thread():
                assert main([*argv, str(checkpoints)]) == 0
        else:
            done = subprocess.run(
                torchrun_command(processes, entry, *argv, str(checkpoints)),
                env={**os.environ, "OMP_NUM_THREADS": "1"},
                capture_output=True,
                text=True,
                timeout=300,
            )
            assert done.returncode == 0, done.stderr[-4000:]
        boards[processes] = json.loads((out / "leaderboard.json").read_text())
    one, two = boards[1], boards[2]
    assert (
        [r["name"] for r in two["rows"]]
        == [r["name"] for r in one["rows"]]
        == ["base", "step_0000002", "step_0000004", "step_0000006"]
    )
    for theirs, ours in zip(two["rows"], one["rows"]):
        for key in MEANS:
            assert theirs[key] == ours[key]
    assert two["best"] == one["best"] and two["comparison"] == one["comparison"]
    out = tmp_path / "processes_2"
    aggregates = [
        (r["step"], r["variant"]) for r in read_metrics(out / "metrics.jsonl") if r["type"] == "aggregate"
    ]
    assert aggregates == [(0, "base"), (2, "model"), (4, "model"), (6, "model")]
    assert len((out / "evaluations.jsonl").read_text().splitlines()) == 4
    for step in (2, 4, 6):
        assert (out / "samples" / f"step_{step:07d}" / "grid.png").is_file()
