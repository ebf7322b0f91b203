"""``scoring.mode: async``: scoring in a background thread gives the same results at the same steps, never
touches training's random streams, surfaces its errors, and is waited for at the end."""

from __future__ import annotations

import logging
import threading

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from sdcallbacks import ValidationCallback
from sdcallbacks.config import validate_config
from sdcallbacks.metrics import build_metrics
from sdcallbacks.outputs import read_metrics
from sdcallbacks.testing.modules import perturb_lora, tiny_lora_modules
from tests.helpers import MeanBrightness, Worsening, logged_aggregates, start


def config(tmp_path, tagger_dir, mode, **overrides):
    data = {
        "output_dir": str(tmp_path / mode),
        "prompts": [{"name": "red", "prompt": "red square, white background", "seeds": [1, 2]}],
        "defaults": {"num_images": 2, "width": 32, "height": 32, "steps": 2, "guidance_scale": 2.0},
        "schedule": {"every_n_steps": 2},
        "metrics": {"tag_accuracy": {"model": str(tagger_dir)}},
        "monitor": "val/brightness/mean",
        "early_stopping": {"patience": 2},
        "scoring": {"mode": mode},
    }
    data.update(overrides)
    return data


def callback(data, metric=None):
    """The configured WD14 tagger (ONNX Runtime in the scoring thread) plus a brightness metric to monitor."""
    cfg = validate_config(data)
    metrics = [
        *build_metrics(cfg.metrics.enabled(), device=cfg.metrics.device or "cpu"),
        metric or MeanBrightness(),
    ]
    return ValidationCallback(cfg, metrics=metrics)


def train(cb, modules, steps: int):
    """A stand-in training loop: a global random draw (as noise sampling does) and an update per step."""
    draws, stopped_at = [], None
    torch.manual_seed(7)
    start(cb, modules)
    for step in range(1, steps + 1):
        draws.append(torch.rand(1).item())
        perturb_lora(modules, step)
        if cb.on_step_end(step).should_stop:
            stopped_at = step
            break
    cb.on_train_end()
    return draws, stopped_at


def test_async_equals_sync_at_the_same_steps_and_stops_at_most_one_validation_late(
    tmp_path, tagger_dir, clip_tokenizer
):
    runs = {}
    for mode in ("sync", "async"):
        cb = callback(config(tmp_path, tagger_dir, mode))
        torch.manual_seed(7)
        draws, stopped_at = train(cb, tiny_lora_modules(clip_tokenizer), steps=20)
        runs[mode] = (cb, draws, stopped_at)
    (sync, sync_draws, sync_stop), (background, async_draws, async_stop) = runs["sync"], runs["async"]
    torch.manual_seed(7)
    undisturbed = [torch.rand(1).item() for _ in range(max(len(sync_draws), len(async_draws)))]
    # Training's draws are those of a run without validation, whether scoring ran beside it or not.
    assert sync_draws == undisturbed[: len(sync_draws)] and async_draws == undisturbed[: len(async_draws)]

    assert sync_stop is not None  # patience 2 on a random walk: it stops
    assert sync_stop <= async_stop <= sync_stop + 2  # every_n_steps 2: at most one validation late
    sync_rows, async_rows = logged_aggregates(tmp_path / "sync"), logged_aggregates(tmp_path / "async")
    assert async_rows[: len(sync_rows)] == sync_rows  # the same values, logged at their own steps
    assert all(step <= async_stop for step, _, _ in async_rows)
    assert background.best_step == sync.best_step and background.best_model_score == sync.best_model_score
    # The checkpoint holds the validated step's weights (copied before training moved on).
    best = "pytorch_lora_weights.safetensors"
    ours, theirs = (load_file(f"{cb.best_model_path}/{best}") for cb in (background, sync))
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    values = async_rows[-1][2]
    assert "val/brightness/mean" in values
    raw = [r for r in read_metrics(tmp_path / "async" / "metrics.jsonl") if r["type"] == "aggregate"]
    assert {"val/time/sampling_s", "val/time/scoring_s", "val/time/blocked_s", "val/rss_mb"} <= set(
        raw[-1]["values"]
    )


class GatedMetric(MeanBrightness):
    """Scores only once the test opens the gate: scoring is visibly still running."""

    gate = threading.Event()

    def compute(self, batch):
        assert self.gate.wait(60), "the test never opened the gate"
        return super().compute(batch)


def test_training_goes_on_while_scoring_runs_and_the_end_waits_for_it(tmp_path, tagger_dir, tiny_modules):
    cfg = config(tmp_path, tagger_dir, "async", sampling={"baseline": False}, early_stopping=None)
    gated = GatedMetric()
    cb = callback(cfg, gated)
    start(cb, tiny_modules)
    gated.gate.clear()
    control = cb.on_step_end(2)  # returns with the job blocked inside scoring
    assert control.should_validate and cb.runner.scoring.busy()  # the task is still scoring
    assert not cb.on_step_end(3).should_validate  # the loop goes on
    assert not (tmp_path / "async" / "metrics.jsonl").exists()  # nothing scored yet
    threading.Timer(0.5, gated.gate.set).start()
    cb.on_train_end()  # waits for the job, then its results are written
    rows = logged_aggregates(tmp_path / "async")
    assert [step for step, _, _ in rows] == [2] and "val/brightness/mean" in rows[0][2]
    assert cb.best_step == 2


def test_the_wait_at_the_end_is_bounded(tmp_path, tagger_dir, tiny_modules, caplog):
    cfg = config(
        tmp_path,
        tagger_dir,
        "async",
        sampling={"baseline": False},
        early_stopping=None,
        scoring={"mode": "async", "wait_s": 0.2},
    )
    gated = GatedMetric()
    cb = callback(cfg, gated)
    start(cb, tiny_modules)
    gated.gate.clear()
    cb.on_step_end(2)
    with caplog.at_level(logging.ERROR, logger="sdcallbacks"):
        cb.on_train_end()  # gives up after wait_s instead of hanging
    assert "scoring job of step 2 is still running after scoring.wait_s=0.2 s" in caplog.text
    gated.gate.set()
    assert cb.runner.scoring.task.wait(60)


class FailAtStep:
    def __init__(self, writer, step):
        self.write_grid, self.step = writer.write_grid, step

    def __call__(self, step, *args):
        if step == self.step:
            raise OSError("disk full")
        return self.write_grid(step, *args)


@pytest.mark.parametrize("on_error", ["warn", "raise"])
def test_a_failing_job_is_logged_counted_and_loses_nothing_earlier(
    tmp_path, tagger_dir, tiny_modules, caplog, on_error
):
    cfg = config(tmp_path, tagger_dir, "async", early_stopping=None, on_error=on_error)
    cb = callback(cfg)
    cb.writer.write_grid = FailAtStep(cb.writer, 4)
    start(cb, tiny_modules)
    cb.on_step_end(2)
    with caplog.at_level(logging.ERROR, logger="sdcallbacks"):
        cb.on_step_end(4)
        assert cb.runner.scoring.task.wait(60)
        if on_error == "raise":
            from sdcallbacks.execution import ValidationFailed

            with pytest.raises(ValidationFailed, match="disk full"):
                cb.on_step_end(5)
            return
        cb.on_step_end(5)  # collected here, in the training thread
    assert cb.failed_validations == 1
    assert "background scoring of the validation at step 4 failed" in caplog.text
    assert "OSError: disk full" in caplog.text
    cb.on_step_end(6)
    cb.on_train_end()
    steps = [step for step, _, _ in logged_aggregates(tmp_path / "async")]
    assert steps == [0, 2, 6]  # step 4 lost its grid write and its aggregate; nothing before or after


# -- backbone placement (scoring.backbones) --------------------------------------------------------


@pytest.mark.parametrize("placement", [None, "offload", "resident"])
def test_backbones_leave_the_device_after_a_validation_only_when_offloaded(
    tmp_path, tagger_dir, tiny_modules, placement
):
    """The tagger's ONNX session (the one backbone here) is dropped after every validation with
    ``offload`` (the default on CUDA) and kept with ``resident``. ``device: cuda`` with no CUDA provider
    runs on ONNX Runtime's CPU provider; the placement steps are the same."""
    data = config(tmp_path, tagger_dir, "sync", sampling={"baseline": False}, early_stopping=None)
    data["metrics"] = {"tag_accuracy": {"model": str(tagger_dir)}, "device": "cuda:0"}
    if placement is not None:
        data["scoring"]["backbones"] = placement
    cb = callback(data)
    start(cb, tiny_modules)
    for step in (2, 4):  # an offloaded backbone comes back for the next validation
        cb.on_step_end(step)
        (tagger,) = cb.validation.pools[0]  # built at the first validation
        assert tagger.loaded and (tagger.session is None) == (placement != "resident")
    rows = logged_aggregates(tmp_path / "sync")
    assert [step for step, _, _ in rows] == [2, 4] and "val/tag_accuracy/mean" in rows[1][2]


def test_an_offloaded_onnx_session_is_dropped_and_rebuilt_alike(backbones):
    from sdcallbacks.metrics.backbones.wd14 import WD14Tagger
    from sdcallbacks.testing.shapes import draw_square

    rng = np.random.default_rng(0)
    images = [draw_square(c, "white", 64, rng) for c in ("red", "green", "blue")]
    # device "cuda" with no CUDA provider runs on the CPU provider; the placement steps are the same.
    tagger = WD14Tagger(str(backbones.tagger), device="cuda")
    before = tagger.embed(images)
    tagger.offload()
    assert tagger.session is None  # ONNX Runtime sessions cannot move: freed
    assert torch.equal(tagger.embed(images), before) and tagger.session is not None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("placement", ["offload", "resident"])
def test_cuda_memory_after_a_validation(tmp_path, backbones, tiny_modules, placement):
    clip = {"model": backbones.clip, "pretrained": None}
    data = config(tmp_path, backbones.tagger, "sync", sampling={"baseline": False}, early_stopping=None)
    data["metrics"] = {"tag_accuracy": {"model": str(backbones.tagger)}, "clip_score": {"clip": clip}}
    data["scoring"]["backbones"] = placement
    cb = callback(data)
    for module in tiny_modules.torch_modules():
        module.to("cuda")
    start(cb, tiny_modules)
    cb.on_step_end(2)  # loads the backbones
    cb.on_step_end(4)
    values = [r for r in read_metrics(tmp_path / "sync" / "metrics.jsonl") if r["type"] == "aggregate"][-1]
    assert values["values"]["val/peak_mem_mb"] > 0
    clip_backbone = next(iter(cb.validation.pools[0]))
    if placement == "offload":
        assert abs(values["values"]["val/mem_delta_mb"]) < 50
        assert all(p.device.type == "cpu" for p in clip_backbone.model.parameters())
    else:
        assert all(p.device.type == "cuda" for p in clip_backbone.model.parameters())


def stopping_after_two(tmp_path, tagger_dir, every: int) -> dict:
    """Async, a worsening monitored score and patience 1: the second validation decides to stop."""
    return config(
        tmp_path,
        tagger_dir,
        "async",
        metrics={},
        monitor="val/worsening/mean",
        early_stopping={"patience": 1},
        sampling={"baseline": False},
        schedule={"every_n_steps": every},
    )


def test_a_stop_decision_collected_by_state_dict_reaches_the_loop_exactly_once(
    tmp_path, tagger_dir, clip_tokenizer
):
    """accelerator.save_state calls state_dict() right after on_step_end: the job it waits for may carry
    the stop, which must still reach the loop (and a run resumed from that state)."""
    import json

    data = stopping_after_two(tmp_path, tagger_dir, every=4)
    cb = ValidationCallback(validate_config(data), metrics=[Worsening()])
    modules = tiny_lora_modules(clip_tokenizer)
    start(cb, modules)
    assert not cb.on_step_end(4).should_stop  # the first validation: best so far
    assert not cb.on_step_end(8).should_stop  # worse: patience 1 is spent, in the job now in flight
    state = json.loads(json.dumps(cb.state_dict()))  # save_state: waits for the job, collects it
    assert cb.stopping_reason == "patience_exhausted"

    resumed = ValidationCallback(validate_config(data), metrics=[Worsening()])
    resumed.load_state_dict(state)

    control = cb.on_step_end(9)
    assert control.should_stop and not control.should_validate
    assert not cb.on_step_end(10).should_stop  # delivered once
    assert resumed.on_step_end(9).should_stop  # a run resumed from the saved state gets it too
    cb.on_train_end()


def test_a_stop_decision_survives_the_failure_of_the_validation_that_collected_it(
    tmp_path, tagger_dir, clip_tokenizer, caplog
):
    """The validation at step 8 first collects step 4's task, which decided to stop, and then fails while
    sampling: the stop still reaches the loop, once."""
    data = stopping_after_two(tmp_path, tagger_dir, every=2)
    cb = ValidationCallback(validate_config(data), metrics=[Worsening()])
    start(cb, tiny_lora_modules(clip_tokenizer))
    assert not cb.on_step_end(2).should_stop  # the first validation: best so far
    assert not cb.on_step_end(4).should_stop  # worse: patience 1 is spent, in the task now in flight
    cb.validation.sampler.sample = lambda *a, **k: (_ for _ in ()).throw(OSError("disk on fire"))
    with caplog.at_level(logging.ERROR, logger="sdcallbacks"):
        control = cb.on_step_end(6)  # collects step 4's task first, then fails
    assert "validation at step 6 failed" in caplog.text and cb.failed_validations == 1
    assert control.should_stop and cb.stopping_reason == "patience_exhausted"
    assert not cb.on_step_end(7).should_stop  # delivered once
    cb.on_train_end()
