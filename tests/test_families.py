"""Model families: the modules given to ``on_train_start`` (by name or as a pipeline's ``components``)
decide the pipeline; mixed or unsupported modules are an error before training."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from PIL import Image

from sdcallbacks import ValidationCallback
from sdcallbacks.sampling.families import ModulesError
from sdcallbacks.sampling.modules import TrainingModules
from sdcallbacks.testing.modules import tiny_sdxl_modules
from tests.helpers import MeanBrightness, Scripted, pipeline_of, run_config, start


@pytest.mark.parametrize("family", ["sd", "sdxl", "sd3", "flux"])
def test_a_pipelines_components_are_taken_as_they_are(family, tmp_path, modules_of):
    """``on_train_start(components=pipe.components)`` draws what the same modules given by name draw."""
    modules = modules_of(family)
    by_name = ValidationCallback(run_config(tmp_path / "by_name"), metrics=[MeanBrightness()])
    start(by_name, modules)
    as_components = ValidationCallback(run_config(tmp_path / "components"), metrics=[MeanBrightness()])
    as_components.on_train_start(components=pipeline_of(modules).components)
    for job in by_name.validation.jobs:
        name = f"step_0000000_base/{job.file_stem}.png"
        a = np.asarray(Image.open(tmp_path / "by_name" / "out" / "samples" / name))
        b = np.asarray(Image.open(tmp_path / "components" / "out" / "samples" / name))
        np.testing.assert_array_equal(a, b)


def tiny_flux_transformer():
    from diffusers import FluxTransformer2DModel

    return FluxTransformer2DModel(
        patch_size=1,
        in_channels=4,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,
        pooled_projection_dim=32,
        axes_dims_rope=[4, 4, 8],
    )


def test_mixed_or_unsupported_modules_are_named_before_training(tmp_path, clip_tokenizer, tiny_modules):
    sdxl = tiny_sdxl_modules(clip_tokenizer)
    cases = {
        "an SD unet with a second text encoder": (
            {**vars(tiny_modules), "text_encoder_2": sdxl.text_encoder_2, "tokenizer_2": clip_tokenizer},
            "modules of two families mixed",
        ),
        "an SDXL unet without its second text encoder": (
            {**vars(sdxl), "text_encoder_2": None, "tokenizer_2": None},
            r"text_encoder_2/tokenizer_2 not given \(None\)",
        ),
        "a Flux transformer as unet": (
            {**vars(tiny_modules), "unet": tiny_flux_transformer()},
            "unet is a FluxTransformer2DModel",
        ),
    }
    for what, (modules, message) in cases.items():
        cb = ValidationCallback(run_config(tmp_path), metrics=[MeanBrightness()])
        with pytest.raises(ModulesError, match=message):
            cb.on_train_start(**modules)
        assert not (tmp_path / "out").exists(), what  # nothing ran
    cb = ValidationCallback(run_config(tmp_path, sampling={"family": "sdxl"}), metrics=[MeanBrightness()])
    with pytest.raises(ModulesError, match=r"sampling\.family is 'sdxl' but the modules are 'sd'"):
        start(cb, tiny_modules)
    with pytest.raises(TypeError, match=r"missing module\(s\) \['vae'\]"):
        cb.on_train_start(components={**pipeline_of(tiny_modules).components, "vae": None})
    with pytest.raises(TypeError, match=r"unknown module name\(s\) \['text_encoder_4'\]"):
        cb.on_train_start(components={**pipeline_of(tiny_modules).components, "text_encoder_4": object()})
    with pytest.raises(TypeError, match=r"unet \(SD, SDXL\) or transformer \(SD3, Flux\); both given"):
        cb.on_train_start(components={**pipeline_of(tiny_modules).components, "transformer": object()})


@pytest.mark.parametrize("family", ["sd", "sdxl"])
def test_unet_and_text_encoder_loras_are_checkpointed_and_redraw_their_images_in_a_fresh_pipeline(
    family, tmp_path, clip_tokenizer, tiny_modules
):
    """LoRAs on the UNet and on every text encoder (``--train_text_encoder``), alpha != r: the baseline
    disables all of them (its images are the pristine model's), the checkpoint carries
    ``unet_lora_layers``, ``text_encoder_lora_layers`` (and ``text_encoder_2_lora_layers`` for SDXL) with
    their adapter configs, and a fresh pipeline's ``load_lora_weights`` draws the best step's images pixel
    for pixel."""
    from peft import LoraConfig
    from safetensors.torch import load_file

    from sdcallbacks.sampling.sampler import ValidationSampler

    modules = tiny_sdxl_modules(clip_tokenizer) if family == "sdxl" else tiny_modules
    modules.unet.delete_adapters("default")
    pristine = copy.deepcopy(modules)
    generator = torch.Generator().manual_seed(0)
    unet_targets = ["to_q", "to_k", "to_v", "to_out.0"]
    modules.unet.add_adapter(
        LoraConfig(r=4, lora_alpha=8, init_lora_weights="gaussian", target_modules=unet_targets)
    )
    encoders = [modules.text_encoder] + ([modules.text_encoder_2] if family == "sdxl" else [])
    for encoder in encoders:  # diffusers' scripts' text-encoder LoRA
        encoder.add_adapter(
            LoraConfig(
                r=2,
                lora_alpha=6,
                init_lora_weights="gaussian",
                target_modules=["q_proj", "k_proj", "v_proj", "out_proj"],
            )
        )
    with torch.no_grad():
        for module in (modules.unet, *encoders):
            for name, param in module.named_parameters():
                if "lora_B" in name:  # B starts at zero: give the adapters something to draw
                    param.add_(0.3 * torch.randn(param.shape, generator=generator))
    config = run_config(tmp_path, monitor="val/scripted/mean")
    cb = ValidationCallback(config, metrics=[Scripted([0.0, 1.0, 0.5])])
    start(cb, modules)
    assert cb.on_step_end(2).should_save
    cb.on_step_end(4)  # worse: step 2 stays best
    assert cb.best_step == 2

    batch = config.sampling.batch_size
    lora_off = ValidationSampler(pristine, batch_size=batch).sample(cb.validation.jobs)
    for job, plain in zip(cb.validation.jobs, lora_off):  # the baseline is the model without any LoRA
        base = np.asarray(
            Image.open(tmp_path / "out" / "samples" / "step_0000000_base" / f"{job.file_stem}.png")
        )
        np.testing.assert_array_equal(np.asarray(plain), base)
    saved = load_file(f"{cb.best_model_path}/pytorch_lora_weights.safetensors")
    prefixes = {key.split(".")[0] for key in saved}
    assert prefixes == (
        {"unet", "text_encoder", "text_encoder_2"} if family == "sdxl" else {"unet", "text_encoder"}
    )
    pipe = pipeline_of(pristine)
    pipe.load_lora_weights(cb.best_model_path)  # into pristine's own modules
    fresh = TrainingModules.from_components(pipe.components)
    redrawn = ValidationSampler(fresh, batch_size=batch).sample(cb.validation.jobs)
    for job, image, plain in zip(cb.validation.jobs, redrawn, lora_off):
        drawn = np.asarray(Image.open(tmp_path / "out" / "samples" / "step_0000002" / f"{job.file_stem}.png"))
        np.testing.assert_array_equal(np.asarray(image), drawn)
        assert not np.array_equal(np.asarray(plain), drawn)  # the LoRAs are what drew it
    fresh.text_encoder.disable_adapters()  # the loaded text-encoder LoRA is part of what drew them
    unet_only = ValidationSampler(fresh, batch_size=batch).sample(cb.validation.jobs)
    assert not any(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(unet_only, redrawn))
