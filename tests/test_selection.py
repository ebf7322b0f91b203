"""Checkpoint top-k and the composite score as tables of cases; the best LoRA on disk; located config
errors for the selection settings."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from PIL import Image

from sdcallbacks import ValidationCallback
from sdcallbacks.aggregation.composite import ScoreWeight, composite_score
from sdcallbacks.aggregation.records import ImageRecord
from sdcallbacks.cli import main as cli
from sdcallbacks.config import ConfigError, validate_config
from sdcallbacks.sampling.modules import TrainingModules
from sdcallbacks.sampling.pipeline import build_pipeline
from sdcallbacks.sampling.sampler import ValidationSampler
from sdcallbacks.selection import ModelCheckpoint
from sdcallbacks.selection import checkpoint as checkpoint_module
from tests.helpers import Scripted

NAN = math.nan


@pytest.mark.parametrize(
    ("scores", "mode", "k", "kept", "best"),
    [
        ([0.1, 0.3, 0.2], "max", 1, [1], 1),
        ([0.1, 0.3, 0.2, 0.05], "max", 2, [1, 2], 1),
        ([0.3, 0.1, 0.2], "min", 1, [1], 1),
        ([0.5, 0.5], "max", 1, [0], 0),  # strict: an equal score does not replace the best
        ([0.1, 0.3, 0.1], "max", 2, [0, 1], 1),  # equal to the k-th: not kept
        ([NAN, 0.2], "max", 1, [1], 1),  # NaN never enters a top k ...
        ([0.1, NAN], "max", 2, [0], 0),  # ... even with room left
        ([0.1, NAN, 0.3], "max", -1, [0, 1, 2], 2),  # -1 keeps all; NaN is still never best
        ([NAN, NAN], "min", -1, [0, 1], None),
        ([0.1, 0.3], "max", 0, [], None),  # 0 keeps none
        ([0.2, 0.1, 0.4, 0.3, 0.5], "min", 3, [0, 1, 3], 1),
    ],
)
def test_top_k_semantics(tmp_path, fake_save, scores, mode, k, kept, best):
    ck = ModelCheckpoint(tmp_path, "val/x", mode, save_top_k=k)
    for step, score in enumerate(scores):
        ck.update(score, step, modules=f"weights at {step}")
    on_disk = sorted(int(p.name.split("_")[1]) for p in tmp_path.glob("step_*"))
    assert on_disk == kept  # stale checkpoints were deleted
    assert sorted(ck.steps.values()) == kept
    assert ck.best_step == best
    if best is not None:
        assert ck.best_model_score == scores[best]
        assert (tmp_path / f"step_{best:07d}" / "weights").read_text() == f"weights at {best}"
    assert not list(tmp_path.glob(".tmp-*")) and not list(tmp_path.glob(".old-*"))


def test_new_best_flag_save_last_and_state_round_trip(tmp_path, fake_save):
    ck = ModelCheckpoint(tmp_path, "val/x", "max", save_top_k=1, save_last=True)
    assert [ck.update(s, i, f"w{i}") for i, s in enumerate([0.2, 0.1, 0.3])] == [True, False, True]
    assert (tmp_path / "last" / "weights").read_text() == "w2" and ck.last_model_path == str(
        tmp_path / "last"
    )
    restored = ModelCheckpoint(tmp_path, "val/x", "max", save_top_k=1, save_last=True)
    restored.load_state_dict(ck.state_dict())
    assert restored.best_step == 2 and restored.kth_best_model_path == ck.kth_best_model_path
    assert not restored.update(0.25, 3, "w3") and (tmp_path / "last" / "weights").read_text() == "w3"


def test_failed_write_leaves_no_partial_checkpoint(tmp_path, monkeypatch):
    def broken(modules, folder):
        folder.mkdir(parents=True)
        (folder / "half").write_text("x")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint_module, "save_weights", broken)
    ck = ModelCheckpoint(tmp_path, "val/x", "max")
    with pytest.raises(OSError):
        ck.update(1.0, 5, None)
    assert list(tmp_path.iterdir()) == [] and ck.best_model_path is None


def _records(scores_by_prompt: dict[str, list[float]], key: str) -> list[ImageRecord]:
    return [
        ImageRecord(0, "model", name, p, i, seed=i, prompt=name, scores={key: v})
        for p, (name, values) in enumerate(scores_by_prompt.items())
        for i, v in enumerate(values)
    ]


def test_composite_score_standardises_per_prompt_against_the_baseline():
    base = _records({"a": [1.0, 3.0], "b": [2.0, 2.0]}, "q") + _records(
        {"a": [0.5, 0.7], "b": [0.4, 0.2]}, "d"
    )
    now = _records({"a": [3.0, 5.0], "b": [3.0, 3.0]}, "q") + _records(
        {"a": [0.3, 0.5], "b": [0.5, 0.1]}, "d"
    )
    # re-derivation: per prompt (now mean - base mean) / base std (ddof 1); b of "q" has no spread, so the
    # std of all of the baseline's "q" scores is used
    pooled = np.std([1, 3, 2, 2], ddof=1)
    z_q = np.mean([(4 - 2) / np.std([1, 3], ddof=1), (3 - 2) / pooled])
    z_d = -np.mean([(0.4 - 0.6) / np.std([0.5, 0.7], ddof=1), (0.3 - 0.3) / np.std([0.4, 0.2], ddof=1)])
    weights = {"q": ScoreWeight(2.0, True), "d": ScoreWeight(1.0, False)}
    out = composite_score(now, base, weights)
    assert out["score/q"] == pytest.approx(z_q) and out["score/d"] == pytest.approx(z_d)
    assert out["score"] == pytest.approx((2 * z_q + z_d) / 3)
    assert composite_score(base, base, weights)["score"] == 0.0
    missing = [r for r in now if "d" not in r.scores]
    assert "score" not in composite_score(missing, base, weights)  # never a partial mean


@pytest.mark.parametrize(
    ("fidelity", "controllability", "beta", "expected"),
    [
        ([0.9, 0.7], [0.6, 0.4], 1.0, 2 * 0.8 * 0.5 / 1.3),  # F1 of the means
        ([0.9, 0.7], [0.6, 0.4], 2.0, 5 * 0.8 * 0.5 / (4 * 0.8 + 0.5)),  # recall (control) weighs more
        ([0.9, 0.7], [0.6, 0.4], 0.5, 1.25 * 0.8 * 0.5 / (0.25 * 0.8 + 0.5)),
        ([0.0, 0.0], [0.0, 0.0], 1.0, 0.0),  # 0/0: 0
        ([1.0, None], [0.5, 0.5], 1.0, 2 * 1.0 * 0.5 / 1.5),  # a skipped image is left out of its mean
        ([NAN, 0.5], [0.5, 0.5], 1.0, NAN),  # a broken score breaks the score
    ],
)
def test_fbeta_combines_fidelity_and_controllability_means(fidelity, controllability, beta, expected):
    from sdcallbacks.aggregation.composite import fbeta_score

    records = [
        ImageRecord(2, "model", "p", 0, i, i, "x", scores={"ccip/same_rate": f, "tag_accuracy": c})
        for i, (f, c) in enumerate(zip(fidelity, controllability))
    ]
    out = fbeta_score(records, ["ccip/same_rate", "tag_accuracy"], beta)
    if math.isnan(expected):
        assert math.isnan(out["score"])
    else:
        assert out["score"] == pytest.approx(expected)
    assert out["score/tag_accuracy"] == pytest.approx(sum(controllability) / len(controllability))
    assert "score" not in fbeta_score(records, ["ccip/same_rate", "missing"], beta)


def test_a_callback_logs_the_fbeta_score_of_its_two_keys(tmp_path, tiny_modules):
    from sdcallbacks.outputs import read_metrics
    from tests.helpers import MeanBrightness, start

    config = {
        "output_dir": str(tmp_path / "out"),
        "prompts": [{"name": "red", "prompt": "red square", "seeds": [1, 2]}],
        "defaults": {"width": 32, "height": 32, "steps": 2, "guidance_scale": 2.0},
        "schedule": {"every_n_steps": 2},
        "sampling": {"baseline": False},
        "score": {"scripted": 1.0, "brightness": 1.0},
        "score_combine": "fbeta",
        "score_beta": 2.0,
        "monitor": "val/score",
    }
    cb = ValidationCallback.from_config(config, metrics=[Scripted([0.8]), MeanBrightness()])
    start(cb, tiny_modules)
    cb.on_step_end(2)
    (row,) = [
        r["values"] for r in read_metrics(tmp_path / "out" / "metrics.jsonl") if r["type"] == "aggregate"
    ]
    p, r = row["val/scripted/mean"], row["val/brightness/mean"]
    assert row["val/score"] == pytest.approx(5 * p * r / (4 * p + r))
    assert cb.best_model_score == pytest.approx(row["val/score"])


# -- config errors located before training ----------------------------------------------------------------


def _config(tmp_path, tagger_dir, **overrides):
    data = {
        "output_dir": str(tmp_path / "out"),
        "prompts": [{"name": "red", "prompt": "red square", "seeds": [1, 2]}],
        "defaults": {"width": 32, "height": 32, "steps": 2, "guidance_scale": 2.0},
        "schedule": {"every_n_steps": 2},
        "metrics": {"tag_accuracy": {"model": str(tagger_dir)}},
        "monitor": "val/tag_accuracy/mean",
    }
    data.update(overrides)
    return data


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"monitor": "val/identity/mean"}, "monitor: no enabled metric logs 'val/identity/mean'"),
        ({"monitor": "val/score"}, "monitor: no enabled metric logs 'val/score'"),
        ({"mode": "up"}, "mode: Input should be 'min' or 'max'"),
        ({"score": {"identity": 1.0}}, "score.identity: no enabled metric logs 'identity'"),
        ({"score": {"tag_accuracy": -1}}, "score.tag_accuracy"),
        (
            {"early_stopping": {"patience": -1}},
            "early_stopping.patience: Input should be greater than or equal",
        ),
        ({"checkpoint": {"save_top_k": -2}}, "checkpoint.save_top_k"),
        (
            {"early_stopping": {"restore_best_at_end": True}, "checkpoint": {"save_top_k": 0}},
            "restore_best_at_end loads the best checkpoint",
        ),
        ({"score": {"tag_accuracy": 1.0}, "sampling": {"baseline": False}}, "set sampling.baseline: true"),
        (
            {"score": {"tag_accuracy": 1.0}, "score_combine": "fbeta"},
            "score_combine: fbeta takes two score keys, fidelity then controllability; got ['tag_accuracy']",
        ),
        (
            {
                "score": {"tag_accuracy": 1.0, "tag_accuracy/oov_rate": 1.0},
                "score_combine": "fbeta",
                "sampling": {"baseline": False},
            },
            "score.tag_accuracy/oov_rate: score_combine fbeta takes scores in [0, 1] where higher is better",
        ),
        # gates, events, Pareto front (tests/test_gates_events.py)
        ({"gates": ["identity/mean >= 0.5"]}, "gates[0]: no enabled metric logs 'val/identity/mean'"),
        (
            {"gates": ["tag_accuracy/mean >= 0.9 * baseline"], "sampling": {"baseline": False}},
            "'tag_accuracy/mean >= 0.9 * baseline' is relative to the baseline validation",
        ),
        ({"gates": ["tag_accuracy/mean => 0.5"]}, "gates: Value error, 'tag_accuracy/mean => 0.5': expected"),
        (
            {"events": {"copy": {"when": "identity/copy/mean > 0.9"}}},
            "events.copy: no enabled metric logs 'val/identity/copy/mean'",
        ),
        ({"events": {"x": {"upturn": "val_loss", "when": "a > 1"}}}, "set exactly one of when"),
        (
            {"events": {"x": {"when": "tag_accuracy/mean < 0.5", "prompts": ["nope"]}}},
            "events.x.prompts: ['nope'] are not prompt names: ['red']",
        ),
        (
            {"early_stopping": {"on_events": ["collapse"]}},
            "early_stopping.on_events: ['collapse'] not among events: []",
        ),
        (
            {"pareto": {"keys": {"tag_accuracy/mean": "max"}}},
            "pareto.keys: Dictionary should have at least 2",
        ),
        (
            {"pareto": {"keys": {"tag_accuracy/mean": "max", "clip_score/mean": "max"}}},
            "pareto.keys.val/clip_score/mean: no enabled metric logs",
        ),
    ],
)
def test_bad_selection_settings_are_located_config_errors(tmp_path, tagger_dir, overrides, message):
    import yaml

    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(_config(tmp_path, tagger_dir, **overrides)), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"run\.yaml") as err:
        ValidationCallback.from_config(path)
    assert message in str(err.value)
    assert cli(["check-config", str(path)]) == 2


def test_unwritable_checkpoint_folder_is_a_config_error(tmp_path, tagger_dir, capsys):
    import yaml

    (tmp_path / "a_file").write_text("not a folder")
    path = tmp_path / "run.yaml"
    data = _config(tmp_path, tagger_dir, checkpoint={"dirpath": str(tmp_path / "a_file" / "ckpt")})
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    assert cli(["check-config", str(path)]) == 2
    assert "checkpoint.dirpath: cannot write to" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # checking creates nothing


def test_set_metric_cannot_be_standardised(tmp_path, tagger_dir, backbones):
    refs = tmp_path / "refs"
    refs.mkdir()
    Image.new("RGB", (32, 32), "red").save(refs / "r.png")
    metrics = {"kid": {"references": str(refs), "clip": {"model": backbones.clip, "pretrained": None}}}
    with pytest.raises(ConfigError, match=r"score\.kid: 'kid' is one value per validation"):
        ValidationCallback.from_config(
            _config(tmp_path, tagger_dir, metrics=metrics, monitor=None, score={"kid": 1})
        )


# -- the best LoRA on disk ---------------------------------------------------------------------------------


def _lora_values(unet) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in unet.named_parameters() if "lora" in n}


def test_best_lora_is_a_detached_snapshot_that_reloads_and_reproduces_its_image(
    tmp_path, tagger_dir, tiny_modules
):
    from safetensors.torch import load_file

    pristine = copy.deepcopy(tiny_modules)  # base weights for an independent pipeline later
    stopping = {"patience": 5, "restore_best_at_end": True}
    cfg = _config(tmp_path, tagger_dir, metrics={}, monitor="val/scripted/mean", early_stopping=stopping)
    # baseline, step 2, step 4: step 2 is best, whatever the weights draw later.
    cb = ValidationCallback(validate_config(cfg), metrics=[Scripted([0.0, 1.0, 0.5])])
    m = tiny_modules
    cb.on_train_start(
        unet=m.unet,
        vae=m.vae,
        text_encoder=m.text_encoder,
        tokenizer=m.tokenizer,
        noise_scheduler=m.noise_scheduler,
    )
    assert cb.on_step_end(2).should_save and cb.best_step == 2
    at_best = _lora_values(m.unet)
    saved = load_file(f"{cb.best_model_path}/pytorch_lora_weights.safetensors")
    # Later optimizer steps (scored worse, so step 2 stays best) must not reach the saved snapshot.
    with torch.no_grad():
        for name, p in m.unet.named_parameters():
            if "lora" in name:
                p.add_(0.5)
    cb.on_step_end(4)
    assert cb.best_step == 2
    after = load_file(f"{cb.best_model_path}/pytorch_lora_weights.safetensors")
    assert saved.keys() == after.keys() and all(torch.equal(saved[k], after[k]) for k in saved)

    # pipe.load_lora_weights(best) on the base model draws the best step's validation image, pixel for pixel.
    base_unet = pristine.unet
    base_unet.delete_adapters("default")
    pipe = build_pipeline(pristine, "ddim")
    pipe.load_lora_weights(cb.best_model_path)
    fresh = TrainingModules.from_components(pipe.components, noise_scheduler=m.noise_scheduler)
    job = cb.validation.jobs[0]
    (image,) = ValidationSampler(fresh, scheduler="ddim", batch_size=1).sample([job])
    drawn = Image.open(tmp_path / "out" / "samples" / "step_0000002" / f"{job.file_stem}.png")
    assert np.array_equal(np.asarray(image), np.asarray(drawn))

    # restore_best_at_end loads the step-2 LoRA back into the live model.
    cb.on_train_end(4)
    restored = _lora_values(m.unet)
    assert all(torch.equal(restored[k], at_best[k]) for k in at_best)


LORA_CONFIGS = {
    "alpha_2r": {"r": 4, "lora_alpha": 8},
    "rank_and_alpha_patterns": {
        "r": 4,
        "lora_alpha": 4,
        "rank_pattern": {"to_k": 2},
        "alpha_pattern": {"to_q": 16, "to_k": 1},
    },
    "dora": {"r": 4, "lora_alpha": 8, "use_dora": True},
}


@pytest.mark.parametrize("lora", LORA_CONFIGS.values(), ids=LORA_CONFIGS.keys())
def test_a_saved_lora_redraws_its_images_in_a_fresh_pipeline_whatever_its_config(
    tmp_path, tagger_dir, clip_tokenizer, lora
):
    """The best checkpoint carries the adapter's config (diffusers' *_lora_adapter_metadata): without it
    load_lora_weights rebuilds the adapter with lora_alpha = r and draws other images."""
    from peft import LoraConfig

    from sdcallbacks.testing.modules import perturb_lora, tiny_lora_modules

    modules = tiny_lora_modules(clip_tokenizer, lora_dropout=0.0)
    pristine = copy.deepcopy(modules)
    modules.unet.delete_adapters("default")
    target = ["to_q", "to_k", "to_v", "to_out.0"]
    modules.unet.add_adapter(LoraConfig(init_lora_weights="gaussian", target_modules=target, **lora))
    perturb_lora(modules, step=2, scale=0.3)  # LoRA B starts at zero: give it something to draw
    cfg = _config(tmp_path, tagger_dir, sampling={"baseline": False})
    cb = ValidationCallback.from_config(cfg)
    cb.on_train_start(**vars(modules))
    assert cb.on_step_end(2).should_save

    pristine.unet.delete_adapters("default")
    pipe = build_pipeline(pristine, "ddim")
    pipe.load_lora_weights(cb.best_model_path)
    fresh = TrainingModules.from_components(pipe.components, noise_scheduler=modules.noise_scheduler)
    redrawn = ValidationSampler(fresh, scheduler="ddim", batch_size=2).sample(cb.validation.jobs)
    for job, image in zip(cb.validation.jobs, redrawn):
        drawn = Image.open(tmp_path / "out" / "samples" / "step_0000002" / f"{job.file_stem}.png")
        assert np.array_equal(np.asarray(image), np.asarray(drawn)), job.file_stem


def test_a_bf16_lora_is_checkpointed_in_fp32_and_restored_into_bf16_exactly(tmp_path, tiny_modules):
    """``--mixed_precision bf16`` scripts keep the LoRA in bf16: the best checkpoint holds the same values
    in fp32 (as the scripts' own final save upcasts), and restore_best_at_end puts them back bit for bit."""
    from safetensors.torch import load_file

    unet = tiny_modules.unet
    lora = {n: p for n, p in unet.named_parameters() if "lora" in n}
    with torch.no_grad():
        for param in lora.values():
            param.data = param.data.to(torch.bfloat16)
    config = validate_config(
        {
            "output_dir": str(tmp_path / "out"),
            "prompts": [{"name": "a", "prompt": "red square", "seeds": [1]}],
            "defaults": {"width": 32, "height": 32, "steps": 1, "guidance_scale": 1.0},
            "sampling": {"baseline": False},
            "schedule": {"every_n_steps": 2},
            "metrics": {},
            "monitor": "val/scripted/mean",
            "early_stopping": {"restore_best_at_end": True},
        }
    )
    cb = ValidationCallback(config, metrics=[Scripted([1.0, 0.5])])
    cb.on_train_start(**vars(tiny_modules))
    cb.on_step_end(2)
    best = {n: p.detach().clone() for n, p in lora.items()}
    with torch.no_grad():
        for param in lora.values():
            param.add_(0.5)
    cb.on_step_end(4)
    saved = load_file(f"{cb.best_model_path}/pytorch_lora_weights.safetensors")
    assert {t.dtype for t in saved.values()} == {torch.float32}

    def values(tensors):  # every value, sorted: the file's keys are diffusers', the live names peft's
        return torch.sort(torch.cat([t.flatten().float() for t in tensors])).values

    assert torch.equal(values(saved.values()), values(best.values()))  # exact: fp32 holds every bf16
    cb.on_train_end(4)
    assert all(p.dtype == torch.bfloat16 and torch.equal(p, best[n]) for n, p in lora.items())
