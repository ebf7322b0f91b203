"""The callback end to end on random-weight tiny modules: files, records, failures, resume."""

from __future__ import annotations

import dataclasses
import json
import logging
import math

import pytest
from PIL import Image

from sdcallbacks import ValidationCallback
from sdcallbacks.config import ConfigError, MetricConfig
from sdcallbacks.metrics.base import ImageMetric
from sdcallbacks.outputs import read_metrics
from sdcallbacks.testing.accelerator import AcceleratorStub
from tests.helpers import start


def config(tmp_path, tagger_dir, **overrides):
    data = {
        "output_dir": str(tmp_path / "out"),
        "prompts": [
            {"name": "red", "prompt": "red square, white background", "seeds": [1, 2]},
            {"name": "../evil/name", "prompt": "blue square"},
        ],
        "defaults": {"num_images": 2, "width": 32, "height": 32, "steps": 2, "guidance_scale": 2.0},
        "schedule": {"every_n_steps": 2},
        "metrics": {"tag_accuracy": {"model": str(tagger_dir)}},
        "monitor": "val/tag_accuracy/mean",
    }
    data.update(overrides)
    return data


def test_validation_writes_grid_images_and_flushed_records(tmp_path, tagger_dir, tiny_modules):
    cb = ValidationCallback.from_config(config(tmp_path, tagger_dir))
    control = start(cb, tiny_modules)  # baseline with LoRA off
    assert control.should_validate and not control.should_stop
    assert not cb.on_step_end(1).should_validate
    assert cb.on_step_end(2).should_validate
    cb.on_train_end(3)  # final step validated once
    cb.on_train_end(3)

    out = tmp_path / "out"
    records = read_metrics(out / "metrics.jsonl")
    images = [r for r in records if r["type"] == "image"]
    aggregates = [r for r in records if r["type"] == "aggregate"]
    assert [a["step"] for a in aggregates] == [0, 2, 3]
    assert aggregates[0]["variant"] == "base" and aggregates[0]["baseline"]
    assert len(images) == 3 * 4
    first = images[0]
    assert {"step", "prompt_name", "seed", "scores", "image_path"} <= set(first)
    assert set(first["scores"]) == {
        "tag_accuracy",
        "tag_accuracy/precision",
        "tag_accuracy/f1",
        "tag_accuracy/oov_rate",
    }
    assert (out / "samples" / "step_0000000_base" / "grid.png").is_file()
    assert (out / "samples" / "step_0000002" / "red_s1.png").is_file()
    # The hostile prompt name stays inside the samples folder.
    for record in images:
        path = (out / "samples").resolve()
        assert path in (tmp_path / record["image_path"]).resolve().parents
    values = aggregates[1]["values"]
    assert "val/tag_accuracy/delta" in values and "val/tag_accuracy/prompt/red" in values
    assert values["val/tag_accuracy/n"] + values["val/tag_accuracy/skipped"] == 4
    # The best step is the one with the highest monitored mean (the earlier one on a tie, as Lightning).
    monitored = {a["step"]: a["values"][cb.config.monitor] for a in aggregates[1:]}
    best = max(monitored, key=lambda step: (monitored[step], -step))
    assert cb.best_step == best and cb.best_model_score == monitored[best]
    assert cb.best_model_path.endswith(f"step_{best:07d}")
    assert (tmp_path / "out" / "checkpoints").is_dir()


class ExplodingMetric(ImageMetric):
    name = "explodes"
    higher_is_better = True
    config_class = MetricConfig

    def load(self):
        pass

    def compute(self, batch):
        raise RuntimeError("boom")


def test_failing_metric_is_logged_and_training_continues(tmp_path, tagger_dir, tiny_modules, caplog):
    cb = ValidationCallback.from_config(config(tmp_path, tagger_dir, monitor=None))
    cb.validation.metrics.append(ExplodingMetric())
    with caplog.at_level(logging.ERROR, logger="sdcallbacks"):
        start(cb, tiny_modules)
        cb.on_step_end(2)
    assert "metric 'explodes' failed" in caplog.text and "RuntimeError: boom" in caplog.text
    records = read_metrics(tmp_path / "out" / "metrics.jsonl")
    scored = [r for r in records if r["type"] == "image"]
    assert all(r["scores"]["explodes"] is None for r in scored)
    assert all(r["scores"]["tag_accuracy"] is not None for r in scored if r["prompt_name"] == "red")


def test_failing_validation_keeps_training_alive_and_earlier_records(
    tmp_path, tagger_dir, tiny_modules, caplog
):
    cb = ValidationCallback.from_config(config(tmp_path, tagger_dir))
    start(cb, tiny_modules)
    before = (tmp_path / "out" / "metrics.jsonl").read_text()
    cb.validation.sampler.sample = lambda *a, **k: (_ for _ in ()).throw(OSError("disk on fire"))
    with caplog.at_level(logging.ERROR, logger="sdcallbacks"):
        control = cb.on_step_end(2)
    assert not control.should_stop and cb.failed_validations == 1
    assert "validation at step 2 failed" in caplog.text
    assert (tmp_path / "out" / "metrics.jsonl").read_text() == before
    assert not cb.on_step_end(2).should_validate  # never twice for the same step

    strict_config = config(tmp_path, tagger_dir, on_error="raise", output_dir=str(tmp_path / "strict"))
    strict = ValidationCallback.from_config(strict_config)
    start(strict, tiny_modules)
    strict.validation.sampler.sample = lambda *a, **k: (_ for _ in ()).throw(OSError("disk on fire"))
    with pytest.raises(OSError, match="disk on fire"):
        strict.on_step_end(2)


def test_monitor_no_metric_logs_is_a_config_error_before_training(tmp_path, tagger_dir):
    with pytest.raises(
        ConfigError, match=r"monitor: no enabled metric logs 'val/nope'.*val/tag_accuracy/mean"
    ):
        ValidationCallback.from_config(config(tmp_path, tagger_dir, monitor="val/nope"))


@pytest.mark.parametrize("strict", [True, False])
def test_monitor_missing_at_run_time_strict_or_warned(tmp_path, tagger_dir, tiny_modules, caplog, strict):
    cfg = config(tmp_path, tagger_dir, early_stopping={"patience": 1, "strict": strict})
    cb = ValidationCallback.from_config(cfg)
    start(cb, tiny_modules)
    cb.validation.metrics[0].compute = lambda batch: (_ for _ in ()).throw(RuntimeError("tagger down"))
    with caplog.at_level(logging.WARNING, logger="sdcallbacks"):
        control = cb.on_step_end(2)
    assert not control.should_stop and "val/tag_accuracy/skipped" in caplog.text
    assert cb.selection.early_stopping.wait_count == 0  # no check happened: patience not spent
    assert cb.failed_validations == (1 if strict else 0)
    if strict:
        assert "monitor 'val/tag_accuracy/mean' was not logged at step 2; logged keys:" in caplog.text


def test_state_dict_round_trip_resumes_bookkeeping(tmp_path, tagger_dir, tiny_modules):
    cfg = config(tmp_path, tagger_dir, early_stopping={"patience": 5})
    cb = ValidationCallback.from_config(cfg)
    start(cb, tiny_modules)
    cb.on_step_end(2)
    state = json.loads(json.dumps(cb.state_dict()))  # JSON-able, as accelerate's save_state needs picklable
    resumed = ValidationCallback.from_config(cfg)
    resumed.load_state_dict(state)
    control = resumed.on_train_start(
        unet=tiny_modules.unet,
        vae=tiny_modules.vae,
        text_encoder=tiny_modules.text_encoder,
        tokenizer=tiny_modules.tokenizer,
        noise_scheduler=tiny_modules.noise_scheduler,
        global_step=2,
    )
    assert not control.should_validate  # the baseline is not redone
    assert not resumed.on_step_end(2).should_validate  # nor the resume step
    assert resumed.best_step == cb.best_step and resumed.best_model_score == cb.best_model_score
    assert resumed.selection.state_dict() == cb.selection.state_dict()
    assert resumed.on_step_end(4).should_validate


def test_a_state_saved_before_the_core_split_still_resumes(tmp_path, tagger_dir, tiny_modules):
    """The state layout of the release before the validation core (flat ``undelivered``, baseline records
    by variant with ``baseline_sets``, the selection's ``history``) loads into the same bookkeeping."""
    cfg = config(tmp_path, tagger_dir, early_stopping={"patience": 5})
    cb = ValidationCallback.from_config(cfg)
    start(cb, tiny_modules)
    cb.on_step_end(2)
    new = json.loads(json.dumps(cb.state_dict()))
    selection = {**new["selection"], "history": new["selection"].pop("monitored")}
    old = {
        "undelivered": None,
        "schedule": new["schedule"],
        "baseline": new["baseline"]["records"],
        "baseline_sets": new["baseline"]["sets"],
        "selection": selection,
        "failed_validations": new["failed_validations"],
    }
    resumed = ValidationCallback.from_config(cfg)
    resumed.load_state_dict(old)
    assert json.loads(json.dumps(resumed.state_dict())) == json.loads(json.dumps(cb.state_dict()))


def test_torn_last_line_is_ignored_but_corruption_elsewhere_is_reported(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"type": "image", "step": 1}\n{"type": "agg', encoding="utf-8")
    assert read_metrics(path) == [{"type": "image", "step": 1}]
    path.write_text('{"type": "image"\n{"type": "image"}\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"metrics\.jsonl:1"):
        read_metrics(path)


def test_no_validation_when_gradients_are_accumulating(tmp_path, tagger_dir, tiny_modules):
    cb = ValidationCallback.from_config(
        config(tmp_path, tagger_dir, sampling={"baseline": False}),
        accelerator=AcceleratorStub(sync_gradients=False),
    )
    start(cb, tiny_modules)
    assert not cb.on_step_end(2).should_validate


def test_set_metrics_val_loss_and_shared_clip_in_a_run(tmp_path, tagger_dir, tiny_modules, backbones):
    refs = tmp_path / "refs"
    refs.mkdir()
    held_out = tmp_path / "held_out"
    held_out.mkdir()
    for i, colour in enumerate([(255, 0, 0), (0, 0, 255), (0, 255, 0)]):
        Image.new("RGB", (32, 32), colour).save(refs / f"{i}.png")
        Image.new("RGB", (32, 32), colour).save(held_out / f"{i}.png")
        (held_out / f"{i}.txt").write_text("a square", encoding="utf-8")
    clip = {"model": backbones.clip, "pretrained": None}
    metrics = {
        "tag_accuracy": {"model": str(tagger_dir)},
        "clip_score": {"clip": clip},
        "diversity_clip": {"clip": clip},
        "kid": {"references": str(refs), "clip": clip, "subsets": 5},
        "val_loss": {"data": str(held_out), "resolution": 32, "timesteps": [500], "every_n_steps": 1},
        "cache_dir": str(tmp_path / "features"),
    }
    cb = ValidationCallback.from_config(config(tmp_path, tagger_dir, metrics=metrics, monitor="val/kid"))
    start(cb, tiny_modules)
    cb.on_step_end(1)  # val_loss only (every_n_steps: 1), no sampling
    cb.on_step_end(2)
    rows = [
        r for r in read_metrics(tmp_path / "out" / "metrics.jsonl") if r["type"] not in ("image", "event")
    ]
    assert [(r["type"], r["step"], r["variant"]) for r in rows] == [
        ("aggregate", 0, "base"),
        ("loss", 1, "model"),  # val_loss between validations: a row of its own kind
        ("aggregate", 2, "model"),
    ]
    base, between, step2 = (r["values"] for r in rows)
    assert {"val/kid", "val/kid/std", "val/val_loss", "val/val_loss/t500"} <= set(base)
    assert "val/val_loss/delta" in between and "val/kid/delta" in step2
    assert "val/diversity_clip/prompt/red" in step2 and "val/clip_score/ci_low" in step2
    assert cb.best_step == 2
    assert len(list((tmp_path / "features").glob("*.safetensors"))) == 1


class NotANumber(ImageMetric):
    """A metric that breaks down: NaN for every image."""

    name = "broken"
    higher_is_better = True
    config_class = MetricConfig

    def load(self):
        pass

    def compute(self, batch):
        return {self.name: [float("nan")] * len(batch)}


@pytest.mark.parametrize("check_finite", [True, False])
def test_a_nan_monitored_value_stops_with_check_finite(tmp_path, tagger_dir, tiny_modules, check_finite):
    cfg = config(
        tmp_path,
        tagger_dir,
        metrics={},
        monitor="val/broken/mean",
        early_stopping={"patience": 3, "check_finite": check_finite},
    )
    cb = ValidationCallback.from_config(cfg, metrics=[NotANumber()])
    start(cb, tiny_modules)
    control = cb.on_step_end(2)
    assert cb.failed_validations == 0  # the value is there, and it is NaN
    values = [r for r in read_metrics(tmp_path / "out" / "metrics.jsonl") if r["type"] == "aggregate"][-1]
    assert "val/broken/mean" in values["values"] and values["values"]["val/broken/skipped"] == 0
    assert cb.best_model_path is None  # NaN is never best
    if check_finite:
        assert control.should_stop and cb.stopping_reason == "non_finite_metric"
    else:
        assert not control.should_stop and cb.selection.early_stopping.wait_count == 1


def test_none_scores_are_skipped_but_a_nan_reaches_the_mean():
    import math

    from sdcallbacks.aggregation.records import ImageRecord, aggregate

    def records(values):
        return [ImageRecord(1, "model", "p", 0, i, i, "x", scores={"k": v}) for i, v in enumerate(values)]

    assert aggregate(records([0.5, None, 0.7]))["val/k/mean"] == pytest.approx(0.6)
    assert aggregate(records([0.5, None, 0.7]))["val/k/skipped"] == 1
    assert math.isnan(aggregate(records([0.5, float("nan")]))["val/k/mean"])
    assert "val/k/mean" not in aggregate(records([None, None]))


def test_a_new_run_into_used_outputs_refuses_overwrites_or_resumes(tmp_path, tagger_dir, tiny_modules):
    first = ValidationCallback.from_config(config(tmp_path, tagger_dir))
    start(first, tiny_modules)
    first.on_step_end(2)
    out = tmp_path / "out"
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert (out / "checkpoints").is_dir()

    again = ValidationCallback.from_config(config(tmp_path, tagger_dir))
    with pytest.raises(ConfigError, match=r"holds an earlier run's outputs .*overwrite_output_dir: true"):
        start(again, tiny_modules)
    assert (out / "metrics.jsonl").read_text().splitlines() == lines  # nothing touched

    resumed = ValidationCallback.from_config(config(tmp_path, tagger_dir))
    resumed.load_state_dict(first.state_dict())
    start(resumed, tiny_modules, step=2)
    resumed.on_step_end(4)
    appended = (out / "metrics.jsonl").read_text().splitlines()
    assert appended[: len(lines)] == lines and len(appended) > len(lines)

    fresh = ValidationCallback.from_config(config(tmp_path, tagger_dir, overwrite_output_dir=True))
    start(fresh, tiny_modules)
    aggregates = [r for r in read_metrics(out / "metrics.jsonl") if r["type"] == "aggregate"]
    assert [a["step"] for a in aggregates] == [0]  # only the new run's baseline
    assert not list((out / "checkpoints").glob("step_*"))
    assert not (out / "samples" / "step_0000004").exists()


def test_staging_folders_of_a_killed_save_are_removed_at_start(tmp_path, tagger_dir, tiny_modules):
    checkpoints = tmp_path / "out" / "checkpoints"
    orphans = [checkpoints / f".tmp-{'a' * 32}", checkpoints / f".old-{'b' * 32}"]
    for folder in orphans:
        folder.mkdir(parents=True)
        (folder / "pytorch_lora_weights.safetensors").write_bytes(b"half written")
    keep = checkpoints / ".tmp-notours"
    keep.mkdir()
    cb = ValidationCallback.from_config(config(tmp_path, tagger_dir))
    start(cb, tiny_modules)
    assert not any(folder.exists() for folder in orphans) and keep.is_dir()


def test_ema_both_validates_the_trained_and_the_ema_weights_and_decides_on_the_first(
    tmp_path, tagger_dir, tiny_modules
):
    """``sampling.ema: both``: every validation draws the model's and the EMA weights' images (files
    ``step_N`` and ``step_N_ema``, keys ``val/...`` and ``val/ema/...``); the EMA images are those of the EMA
    weights, the UNet gets its own weights back, and ``monitor`` reads the trained weights."""
    import copy

    import numpy as np
    import torch
    from diffusers.training_utils import EMAModel

    from sdcallbacks.sampling import ValidationSampler

    ema = EMAModel(tiny_modules.unet.parameters())
    with torch.no_grad():
        for param in ema.shadow_params:
            param.add_(0.05 * torch.randn(param.shape, generator=torch.Generator().manual_seed(3)))
    tiny_modules.ema = ema
    data = config(tmp_path, tagger_dir, sampling={"ema": "both", "baseline": False}, early_stopping=None)
    cb = ValidationCallback.from_config(data)
    start(cb, tiny_modules)
    trained = [p.detach().clone() for p in tiny_modules.unet.parameters()]
    cb.on_step_end(2)
    assert all(torch.equal(a, b) for a, b in zip(trained, tiny_modules.unet.parameters()))
    rows = [r for r in read_metrics(tmp_path / "out" / "metrics.jsonl") if r["type"] == "aggregate"]
    assert [(r["step"], r["variant"]) for r in rows] == [(2, "model"), (2, "ema")]
    assert "val/tag_accuracy/mean" in rows[0]["values"] and "val/ema/tag_accuracy/mean" in rows[1]["values"]
    assert cb.best_model_score == rows[0]["values"]["val/tag_accuracy/mean"]

    def saved(folder):
        return np.stack(
            [np.asarray(Image.open(folder / f"{job.file_stem}.png")) for job in cb.validation.jobs]
        )

    model_images = saved(tmp_path / "out" / "samples" / "step_0000002")
    ema_images = saved(tmp_path / "out" / "samples" / "step_0000002_ema")
    assert not np.array_equal(model_images, ema_images)
    with_ema = copy.deepcopy(tiny_modules)
    ema.copy_to(with_ema.unet.parameters())  # the EMA weights as the UNet's own
    redrawn = ValidationSampler(with_ema, batch_size=cb.config.sampling.batch_size).sample(cb.validation.jobs)
    np.testing.assert_array_equal(np.stack([np.asarray(im) for im in redrawn]), ema_images)


def with_val_loss(tmp_path, tagger_dir) -> dict:
    """The tagger and a val_loss over one captioned held-out image."""
    held_out = tmp_path / "held_out"
    held_out.mkdir()
    Image.new("RGB", (32, 32), (255, 0, 0)).save(held_out / "a.png")
    (held_out / "a.txt").write_text("a red square", encoding="utf-8")
    return {"tag_accuracy": {"model": str(tagger_dir)}, "val_loss": {"data": str(held_out), "resolution": 32}}


@pytest.mark.parametrize("family", ["sdxl", "flux"])
def test_val_loss_runs_on_each_family_in_a_validation(
    family, tmp_path, tagger_dir, clip_tokenizer, t5_tokenizer
):
    """Per timestep for the UNet families, per sigma for the flow-matching ones."""
    from sdcallbacks.testing.modules import tiny_flux_modules, tiny_sdxl_modules

    metrics = with_val_loss(tmp_path, tagger_dir)
    cb = ValidationCallback.from_config(config(tmp_path, tagger_dir, metrics=metrics))
    modules = (
        tiny_sdxl_modules(clip_tokenizer)
        if family == "sdxl"
        else tiny_flux_modules(clip_tokenizer, t5_tokenizer)
    )
    start(cb, modules)
    cb.on_step_end(2)
    rows = [r for r in read_metrics(tmp_path / "out" / "metrics.jsonl") if r["type"] == "aggregate"]
    assert [r["variant"] for r in rows] == ["base", "model"]
    assert all(math.isfinite(r["values"]["val/val_loss"]) for r in rows)
    point = "t200" if family == "sdxl" else "sigma0.75"
    assert "val/val_loss/delta" in rows[1]["values"] and f"val/val_loss/{point}" in rows[1]["values"]


def test_val_loss_with_a_scheduler_it_cannot_model_is_a_config_error_before_training(
    tmp_path, tagger_dir, tiny_modules
):
    """An Euler (sigma) noise scheduler, as diffusers' SDXL script uses for EDM-style training: val_loss
    would noise the wrong way at every validation, so on_train_start refuses it, naming the class."""
    from diffusers import DDIMScheduler, EulerDiscreteScheduler

    metrics = with_val_loss(tmp_path, tagger_dir)
    cb = ValidationCallback.from_config(config(tmp_path, tagger_dir, metrics=metrics))
    euler = EulerDiscreteScheduler.from_config(tiny_modules.noise_scheduler.config)
    with pytest.raises(
        ConfigError, match=r"metrics\.val_loss: the noise scheduler is a EulerDiscreteScheduler"
    ):
        start(cb, dataclasses.replace(tiny_modules, noise_scheduler=euler))
    assert not (tmp_path / "out").exists()  # nothing ran
    ddim = DDIMScheduler.from_config(tiny_modules.noise_scheduler.config)  # DDPM's noising: accepted
    assert start(cb, dataclasses.replace(tiny_modules, noise_scheduler=ddim)).should_validate
