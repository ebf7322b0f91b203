"""``sampling.lora_scales``: each validation also drawn at lower LoRA scales (peft's scaling, no reload).

Anchors, pixel for pixel: the sweep's scale 1.0 is the run without a sweep; scale 0 is the base model
(the LoRA disabled); scale 0.5 is the LoRA whose ``lora_B`` was halved (0.5 is exact in floating point).
Training's adapters come back with the exact scaling they had.
"""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
from PIL import Image

from sdcallbacks import ValidationCallback
from sdcallbacks.config import ConfigError, validate_config
from sdcallbacks.outputs import read_metrics
from sdcallbacks.sampling.variants import lora_layers
from sdcallbacks.selection.selection import Selection
from sdcallbacks.testing.modules import perturb_lora, tiny_lora_modules
from sdcallbacks.validation.result import ValidationResult, VariantResult
from tests.helpers import MeanBrightness


def _config(out, **sampling):
    return {
        "output_dir": str(out),
        "prompts": [{"name": "red", "prompt": "red square", "seeds": [1, 2]}],
        "defaults": {"width": 32, "height": 32, "steps": 2, "guidance_scale": 2.0},
        "schedule": {"every_n_steps": 2, "validate_at_end": False},
        "sampling": {"baseline": True, **sampling},
    }


def _run(out, modules, **sampling):
    cb = ValidationCallback.from_config(_config(out, **sampling), metrics=[MeanBrightness()])
    cb.on_train_start(**vars(modules))
    cb.on_step_end(1)
    cb.on_step_end(2)
    cb.on_train_end(2)
    return read_metrics(out / "metrics.jsonl")


def _pixels(records, step, variant):
    paths = [
        r["image_path"]
        for r in records
        if r["type"] == "image" and r["step"] == step and r["variant"] == variant
    ]
    assert paths, (step, variant)
    return [np.asarray(Image.open(p).convert("RGB")) for p in paths]


@pytest.fixture(scope="module")
def swept(tmp_path_factory, clip_tokenizer):
    """One run with lora_scales [0.0, 0.5] and one without, on the same trained (perturbed) LoRA."""
    tmp = tmp_path_factory.mktemp("scales")
    modules = tiny_lora_modules(clip_tokenizer)
    perturb_lora(modules, 1, scale=0.5)
    halved = copy.deepcopy(modules)
    before = [dict(layer.scaling) for layer in lora_layers(modules)]
    sweep = _run(tmp / "sweep", modules, lora_scales=[0.0, 0.5, 1.0])
    after = [dict(layer.scaling) for layer in lora_layers(modules)]
    plain = _run(tmp / "plain", copy.deepcopy(halved))
    for name, param in halved.denoiser.named_parameters():
        if "lora_B" in name:
            param.data.mul_(0.5)
    half = _run(tmp / "half", halved)
    return {"sweep": sweep, "plain": plain, "half": half, "before": before, "after": after, "tmp": tmp}


def test_scale_one_is_the_run_without_a_sweep_pixel_for_pixel(swept):
    for a, b in zip(_pixels(swept["sweep"], 2, "model"), _pixels(swept["plain"], 2, "model"), strict=True):
        assert np.array_equal(a, b)


def test_scale_zero_is_the_base_model_and_half_is_the_halved_lora(swept):
    base = _pixels(swept["sweep"], 0, "base")
    for a, b in zip(_pixels(swept["sweep"], 2, "scale_0"), base, strict=True):
        assert np.array_equal(a, b)
    for a, b in zip(_pixels(swept["sweep"], 2, "scale_0.5"), _pixels(swept["half"], 2, "model"), strict=True):
        assert np.array_equal(a, b)
    model = _pixels(swept["sweep"], 2, "model")
    assert not all(np.array_equal(a, b) for a, b in zip(model, base))  # the LoRA does change the images


def test_training_gets_its_exact_scaling_back(swept):
    assert swept["after"] == swept["before"]
    assert all(value != 0 for scaling in swept["after"] for value in scaling.values())


def test_each_scale_logs_its_metrics_and_its_cost(swept):
    rows = {(r["step"], r["variant"]): r["values"] for r in swept["sweep"] if r["type"] == "aggregate"}
    assert sorted(rows) == [(0, "base"), (2, "model"), (2, "scale_0"), (2, "scale_0.5")]  # 1.0 is the model
    half = rows[(2, "scale_0.5")]
    assert {"val/scale_0.5/brightness/mean", "val/scale_0.5/brightness/delta"} <= set(half)
    assert half["val/scale_0.5/time/sampling_s"] > 0
    zero = rows[(2, "scale_0")]
    assert zero["val/scale_0/brightness/delta"] == pytest.approx(0.0, abs=1e-12)  # scale 0 is the base
    assert (swept["tmp"] / "sweep" / "samples" / "step_0000002_scale_0.5" / "grid.png").is_file()


def test_best_of_scales_picks_the_best_scale_and_records_it_with_the_checkpoint(tmp_path, fake_save):
    config = validate_config(
        {
            **_config(tmp_path / "out", lora_scales=[0.6, 0.8], best_of_scales=True),
            "monitor": "val/x/mean",
        }
    )
    selection = Selection(config)

    def result(step, at_one, at_06, at_08):
        values = {"val/x/mean": at_one, "val/scale_0.6/x/mean": at_06, "val/scale_0.8/x/mean": at_08}
        return ValidationResult(step, False, [VariantResult("model", "model", [], [], [], {}, values)])

    first = selection.decide(result(2, 0.5, 0.7, float("nan")), "w2")
    assert first.scalars["val/lora_scale/best"] == 0.6 and selection.best_model_score == 0.7
    second = selection.decide(result(4, 0.65, 0.6, 0.65), "w4")  # a tie goes to 1.0
    assert second.scalars["val/lora_scale/best"] == 1.0 and not second.new_best
    third = selection.decide(result(6, 0.5, 0.6, 0.9), "w6")
    assert third.new_best and selection.summary()["best/lora_scale"] == 0.8
    recorded = json.loads((tmp_path / "out" / "checkpoints" / "step_0000006" / "lora_scale.json").read_text())
    assert recorded == {"step": 6, "lora_scale": 0.8, "monitor": "val/x/mean"}
    resumed = Selection(config)
    resumed.load_state_dict(selection.state_dict())
    assert resumed.summary() == selection.summary()


def test_scales_on_a_full_fine_tune_and_bad_scales_are_located_config_errors(tmp_path, clip_tokenizer):
    full = tiny_lora_modules(clip_tokenizer, lora=False)
    cb = ValidationCallback.from_config(
        {**_config(tmp_path / "out", lora_scales=[0.5], baseline=False)}, metrics=[MeanBrightness()]
    )
    with pytest.raises(
        ConfigError, match=r"sampling\.lora_scales: \[0\.5\] scale LoRA adapters, but the modules"
    ):
        cb.on_train_start(**vars(full))
    with pytest.raises(ConfigError, match="LoRA scales are >= 0"):
        validate_config(_config(tmp_path / "out", lora_scales=[-0.5]))
    with pytest.raises(ConfigError, match="best_of_scales needs lora_scales"):
        validate_config(_config(tmp_path / "out", lora_scales=[1.0], best_of_scales=True))
