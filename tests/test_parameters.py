"""Reproducible samples: every PNG the callback writes carries A1111's ``parameters`` text chunk, which web
UIs and ``sdcallbacks score`` read back, and which draws the same image again."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from sdcallbacks import ValidationCallback
from sdcallbacks.cli import main
from sdcallbacks.prompts.parameters import GenerationParameters
from sdcallbacks.testing.modules import perturb_lora, tiny_lora_modules

A1111 = (
    "masterpiece, 1girl, red hair\n"
    "Negative prompt: lowres, bad hands\n"
    "Steps: 30, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 1234, Size: 512x512, "
    'Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Lora hashes: "name: abcdef012345", Version: v1.10.1'
)


def test_the_web_ui_format_reads_and_writes_back():
    read = GenerationParameters.from_text(A1111)
    assert read.prompt == "masterpiece, 1girl, red hair"
    assert read.negative_prompt == "lowres, bad hands"
    assert read.seed == 1234
    assert read.fields["Lora hashes"] == "name: abcdef012345"  # quoted: it holds a colon
    assert read.fields["Size"] == "512x512" and read.fields["Schedule type"] == "Karras"
    assert GenerationParameters.from_text(read.to_text()) == read
    assert read.to_text() == A1111
    # A prompt over several lines, no negative prompt, a value with a comma.
    odd = GenerationParameters("line one\nline two", "", {"Steps": "3", "Seed": "-1", "Model": "a, b"})
    assert GenerationParameters.from_text(odd.to_text()) == odd
    # A bare caption is a prompt, not settings.
    assert GenerationParameters.from_text("red square, white background").fields == {}


def _run(tmp_path, clip_tokenizer):
    config = {
        "output_dir": str(tmp_path / "out"),
        "prompts": [
            {"name": "red", "prompt": "red square", "negative_prompt": "blurry", "seeds": [11, 12]},
            {"name": "blue", "prompt": "blue square, white background", "seeds": [13]},
        ],
        "defaults": {"width": 32, "height": 32, "steps": 3, "guidance_scale": 2.5},
        "sampling": {"baseline": True},
        "schedule": {"every_n_steps": 2},
        "metrics": {},
        "monitor": None,
    }
    modules = tiny_lora_modules(clip_tokenizer)
    cb = ValidationCallback.from_config(config)
    cb.on_train_start(**vars(modules))
    for step in (1, 2):
        perturb_lora(modules, step)
        cb.on_step_end(step)
    cb.on_train_end(2)
    return tmp_path / "out", modules


def test_every_sample_png_carries_its_generation_parameters(tmp_path, clip_tokenizer, backbones):
    out, modules = _run(tmp_path, clip_tokenizer)
    pngs = sorted((out / "samples").rglob("*.png"))
    assert len(pngs) == 2 * 4  # base and step 2: three images and a grid each
    for path in pngs:
        with Image.open(path) as image:
            read = GenerationParameters.from_text(image.info["parameters"])
        variant = "base" if path.parent.name.endswith("_base") else "model"
        step = 0 if variant == "base" else 2
        seed = 11 if path.name == "grid.png" else int(path.stem.rsplit("_s", 1)[1])  # grid: its first image
        assert read.seed == seed, path
        red = seed in (11, 12)
        assert read.prompt == ("red square" if red else "blue square, white background")
        assert read.negative_prompt == ("blurry" if red else "")
        assert read.fields == {
            "Steps": "3",
            "Sampler": "DDIM",
            "CFG scale": "2.5",
            "Seed": str(seed),
            "Size": "32x32",
            "Training step": str(step),
            "Variant": variant,
        }

    # What a web UI does with it: the same settings on the same weights draw the same image. The baseline
    # images are the base model's (LoRA off), drawn here by a plain diffusers pipeline.
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    modules.unet.disable_adapters()
    pipe = StableDiffusionPipeline(
        vae=modules.vae,
        text_encoder=modules.text_encoder,
        tokenizer=modules.tokenizer,
        unet=modules.unet,
        scheduler=DDIMScheduler.from_config(modules.noise_scheduler.config),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    path = out / "samples" / "step_0000000_base" / "red_s12.png"
    with Image.open(path) as image:
        read = GenerationParameters.from_text(image.info["parameters"])
        logged = np.asarray(image.convert("RGB"))
    width, height = (int(v) for v in read.fields["Size"].split("x"))
    again = pipe(
        prompt=read.prompt,
        negative_prompt=read.negative_prompt,
        num_inference_steps=int(read.fields["Steps"]),
        guidance_scale=float(read.fields["CFG scale"]),
        width=width,
        height=height,
        generator=torch.Generator("cpu").manual_seed(read.seed),
    ).images[0]
    assert np.array_equal(np.asarray(again.convert("RGB")), logged)

    # sdcallbacks score reads the prompt and seed back from the chunk alone (no captions, no prompt file).
    config = tmp_path / "score.yaml"
    config.write_text(f'metrics:\n  clip_score: {{clip: {{model: "{backbones.clip}", pretrained: null}}}}\n')
    scores = tmp_path / "scores.jsonl"
    folder = out / "samples" / "step_0000002"
    assert main(["score", str(folder), "--config", str(config), "--out", str(scores)]) == 0
    records = [json.loads(line) for line in scores.read_text().splitlines()]
    read_back = {r["image_path"].rsplit("/", 1)[-1]: (r["prompt"], r["seed"]) for r in records if "seed" in r}
    assert read_back["red_s11.png"] == ("red square", 11)
    assert read_back["blue_s13.png"] == ("blue square, white background", 13)


@pytest.mark.parametrize("text", ["", "just a caption"])
def test_a_png_without_settings_has_no_seed(text):
    assert GenerationParameters.from_text(text).seed is None
