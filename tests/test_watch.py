"""``sdcallbacks watch``: a trainer process writing checkpoints chunk by chunk, each scored once when complete
(never half-written) with the values ``evaluate`` gives; early stopping's STOP file, event and command;
top-k kept as links that survive the trainer's rotation; the trainer's W&B run."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file

from sdcallbacks import load_config
from sdcallbacks.cli import main
from sdcallbacks.evaluation import Evaluator, Watcher, evaluate
from sdcallbacks.outputs import read_metrics
from sdcallbacks.testing.wandb_reader import find_run_file, read_offline_run
from tests.test_evaluate import MEANS, _config, _logged, _train, base_folder  # noqa: F401 (fixture)
from tests.test_trackers import wandb_env  # noqa: F401 (fixture)

FAKE_TRAINER = Path(__file__).parent / "fake_trainer.py"


def _kohya_copy(diffusers_file: Path, target: Path, step: int) -> None:
    """The callback's LoRA file (diffusers keys) in kohya's key format with sd-scripts' step metadata."""
    from diffusers.utils import convert_state_dict_to_kohya, convert_unet_state_dict_to_peft

    state = load_file(diffusers_file)
    peft = convert_unet_state_dict_to_peft({k.removeprefix("unet."): v for k, v in state.items()})
    kohya = convert_state_dict_to_kohya({f"unet.{k}": v for k, v in peft.items()})
    save_file(kohya, target, metadata={"ss_steps": str(step), "ss_network_module": "networks.lora"})


def _trained(tmp_path, tagger_dir, base_folder, config_overrides=None):  # noqa: F811
    config_path = _config(tmp_path, tagger_dir)
    _train(base_folder, config_path, steps=6)
    if config_overrides:
        data = json.loads(config_path.read_text())
        data.update(config_overrides)
        config_path.write_text(json.dumps(data))
    return config_path, tmp_path / "train" / "checkpoints"


def test_a_trainer_writing_slowly_gets_each_checkpoint_scored_once_never_half_written(
    tmp_path,
    tagger_dir,
    base_folder,  # noqa: F811
    monkeypatch,
):
    config_path, saved = _trained(tmp_path, tagger_dir, base_folder)
    sources = tmp_path / "sources"
    sources.mkdir()
    _kohya_copy(saved / "step_0000002" / "pytorch_lora_weights.safetensors", sources / "kohya.safetensors", 2)
    (sources / "log.txt").write_text("step 6 loss 0.1\n" * 50)
    plan = {  # source -> what the trainer writes, in this order
        sources / "kohya.safetensors": "mylora-step00000002.safetensors",  # kohya sd-scripts
        saved
        / "step_0000004"
        / "pytorch_lora_weights.safetensors": "mylora_000000004.safetensors",  # ai-toolkit
        sources / "log.txt": "log.txt",
        saved / "step_0000006" / "pytorch_lora_weights.safetensors": (
            "checkpoint-6/pytorch_lora_weights.safetensors"  # diffusers' scripts
        ),
    }
    run = tmp_path / "run"
    run.mkdir()
    argv = [str(run), *(f"{s}={t}" for s, t in plan.items()), "--chunks", "4"]
    trainer = subprocess.Popen(
        [sys.executable, str(FAKE_TRAINER), *argv], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )

    import sdcallbacks.evaluation.watch as watch_module

    reads = []  # (entry, {file: size} when watch first opened it)
    checkpoint_at = watch_module.checkpoint_at

    def spying(path, step_pattern=None):
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        reads.append((path.name, {f.name: f.stat().st_size for f in files}))
        return checkpoint_at(path, step_pattern)

    monkeypatch.setattr(watch_module, "checkpoint_at", spying)
    watcher = Watcher(Evaluator(load_config(config_path), str(base_folder), tmp_path / "watch"), run)
    try:
        watcher.poll()  # the base model, before anything is written
        while True:
            trainer.stdin.write("next\n")
            trainer.stdin.flush()
            if trainer.stdout.readline().startswith("done"):
                break
            watcher.poll()  # between any two writes, half-written files included
        for _ in range(2):
            watcher.poll()
    finally:
        trainer.communicate("quit\n", timeout=30)

    assert watcher.outcome.scored == [
        "mylora-step00000002.safetensors",
        "mylora_000000004.safetensors",
        "checkpoint-6",
    ]
    final = {name: Path(s).stat().st_size for s, name in plan.items()}
    assert len(reads) == 4  # each entry opened once: the three checkpoints and the log
    for entry, sizes in reads:  # ... and only complete
        for name, size in sizes.items():
            written = next(t for t in final if t.endswith(name))
            assert size == final[written], f"{entry} was read at {size} of {final[written]} bytes"
    assert [s["path"].rsplit("/", 1)[-1] for s in watcher.outcome.skipped] == ["log.txt"]

    # The same values as evaluate on the same files, and as the callback logged at those steps.
    evaluated = evaluate(load_config(config_path), str(base_folder), [run], tmp_path / "eval")
    watched = json.loads((tmp_path / "watch" / "leaderboard.json").read_text())["rows"]
    logged = _logged(tmp_path / "train")
    for ours, theirs in zip(watched, evaluated.leaderboard.rows, strict=True):
        assert ours["name"] == theirs["name"]
        for key in MEANS:
            assert ours[key] == pytest.approx(theirs[key], abs=1e-9)
            if ours["step"]:
                assert ours[key] == pytest.approx(logged[(ours["step"], "model")][key], abs=1e-6)

    # Started again on the same folder: everything is read back, nothing scored twice.
    again = Watcher(Evaluator(load_config(config_path), str(base_folder), tmp_path / "watch"), run)
    again.poll()
    again.poll()
    assert again.evaluator.scored == [] and len(again.evaluator.reused) == 4


def test_early_stopping_writes_stop_runs_the_command_and_the_best_survives_rotation(
    tmp_path,
    tagger_dir,
    base_folder,  # noqa: F811
):
    """``stopping_threshold`` below any score: the first checkpoint stops the run. The kept best is a hard
    link of the trainer's file, so the trainer deleting its checkpoint does not delete it."""
    overrides = {"checkpoint": {"save_top_k": 1}, "early_stopping": {"stopping_threshold": -1.0}}
    config_path, saved = _trained(tmp_path, tagger_dir, base_folder, overrides)
    run = tmp_path / "run"
    for step in (2, 4):
        shutil.copytree(saved / f"step_{step:07d}", run / f"checkpoint-{step}")
    marker = tmp_path / "stopped.txt"
    evaluator = Evaluator(load_config(config_path), str(base_folder), tmp_path / "watch")
    command = f'echo "$SDCALLBACKS_STOP_STEP $SDCALLBACKS_STOP_REASON $SDCALLBACKS_BEST_PATH" > {marker}'
    watcher = Watcher(evaluator, run, on_stop=command)
    outcome = watcher.run(poll_s=0, sleep=lambda s: None)

    assert outcome.reason == "early_stop" and outcome.scored == ["checkpoint-2"]  # checkpoint-4 never read
    kept = tmp_path / "watch" / "checkpoints" / "step_0000002"
    stop = json.loads((tmp_path / "watch" / "STOP").read_text())
    assert stop["step"] == 2 and stop["reason"] == "stopping_threshold" and stop["best_path"] == str(kept)
    assert marker.read_text().split() == ["2", "stopping_threshold", str(kept)]
    events = [r for r in read_metrics(tmp_path / "watch" / "metrics.jsonl") if r["type"] == "event"]
    assert [(e["step"], e["event"]) for e in events] == [(2, "selection"), (2, "early_stop")]
    original = run / "checkpoint-2" / "pytorch_lora_weights.safetensors"
    ours = kept / "pytorch_lora_weights.safetensors"
    assert os.path.samefile(original, ours)  # a hard link, not a copy
    shutil.rmtree(run / "checkpoint-2")  # the trainer's rotation
    rescored = evaluate(load_config(config_path), str(base_folder), [kept], tmp_path / "watch")
    assert rescored.reused == ["base", "step_0000002"]  # the same content, scored already


def test_the_command_attaches_to_the_trainers_wandb_run_and_writes_tensorboard(
    tmp_path,
    tagger_dir,
    base_folder,  # noqa: F811
    wandb_env,  # noqa: F811
    monkeypatch,
):
    """``--wandb-run-id`` of a run W&B has never seen, offline: the run is created under that id, the
    rows carry each checkpoint's step, and the local files are written as always; ``--tensorboard-dir``
    gets the same scalars and the prompt grids at each checkpoint's step."""
    import wandb
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    wandb.teardown()
    monkeypatch.setenv("WANDB_MODE", "offline")
    config_path, saved = _trained(tmp_path, tagger_dir, base_folder)
    run = tmp_path / "run"
    for step in (2, 4):
        shutil.copytree(saved / f"step_{step:07d}", run / f"checkpoint-{step}")
    out = tmp_path / "watch"
    argv = ["watch", str(run), "--config", str(config_path), "--base", str(base_folder), "--out", str(out)]
    options = ["--poll", "0.05", "--idle-exit", "0.01", "--wandb-run-id", "trainer-run-7"]
    assert main([*argv, *options, "--tensorboard-dir", str(tmp_path / "logs")]) == 0
    wandb.teardown()
    run_file = find_run_file(wandb_env)
    assert "trainer-run-7" in run_file.name
    rows = [r for r in read_offline_run(run_file).history if "val/tag_accuracy/mean" in r]
    assert [r["train/global_step"] for r in rows] == [0, 2, 4]
    assert (out / "leaderboard.csv").is_file() and (out / "samples" / "step_0000004" / "grid.png").is_file()
    events = EventAccumulator(str(tmp_path / "logs"), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    assert [e.step for e in events.Scalars("val/tag_accuracy/mean")] == [0, 2, 4]
    assert [e.value for e in events.Scalars("val/tag_accuracy/mean")] == pytest.approx(
        [r["val/tag_accuracy/mean"] for r in rows]
    )
    assert [e.step for e in events.Images("val/images/red")] == [0, 2, 4]


def test_two_processes_watch_as_one(tmp_path, tagger_dir, base_folder):  # noqa: F811
    """``sdcallbacks watch`` under torchrun with 2 CPU processes (gloo) against 1: the main process looks
    at the folder and decides, one checkpoint per process per round is scored; the same leaderboard, the
    same selection events in training order and the same kept best, and both end when idle."""
    import sdcallbacks
    from sdcallbacks.testing.launch import torchrun_command

    overrides = {"checkpoint": {"save_top_k": 1}, "early_stopping": {"patience": 5}}
    config_path, saved = _trained(tmp_path, tagger_dir, base_folder, overrides)
    run = tmp_path / "run"
    for step in (2, 4, 6):
        shutil.copytree(saved / f"step_{step:07d}", run / f"checkpoint-{step}")
    entry = Path(sdcallbacks.__file__).parent / "__main__.py"
    boards, events = {}, {}
    for processes in (1, 2):
        out = tmp_path / f"processes_{processes}"
        argv = ["watch", "--config", str(config_path), "--base", str(base_folder), "--out", str(out)]
        argv += ["--poll", "0.1", "--idle-exit", "0.05", str(run)]
        done = subprocess.run(
            torchrun_command(processes, entry, *argv),
            env={**os.environ, "OMP_NUM_THREADS": "1"},
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr[-4000:]
        assert done.stdout.count("watch ended (idle): scored 3, passed over 0") == 1  # the main process only
        boards[processes] = json.loads((out / "leaderboard.json").read_text())
        events[processes] = [
            {k: v for k, v in r.items() if k != "best/path"}
            for r in read_metrics(out / "metrics.jsonl")
            if r["type"] == "event"
        ]
    one, two = boards[1], boards[2]
    assert [r["name"] for r in two["rows"]] == [r["name"] for r in one["rows"]]
    assert [r["name"] for r in one["rows"]] == ["base", "checkpoint-2", "checkpoint-4", "checkpoint-6"]
    for theirs, ours in zip(two["rows"], one["rows"]):
        for key in MEANS:
            assert theirs[key] == ours[key]
    assert events[2] == events[1] and [e["step"] for e in events[1]] == [2, 4, 6]
    best = events[1][-1]["best/step"]
    assert (tmp_path / "processes_2" / "checkpoints" / f"step_{best:07d}").is_dir()
