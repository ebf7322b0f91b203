"""SD3 and Flux: the transformer families draw through their own diffusers pipelines with every guarantee
SD 1.x has (seeds, RNG, modes, dtypes, the baseline, EMA, async scoring), save LoRA checkpoints that their
pipelines load back pixel for pixel, and score ``val_loss`` by flow matching at fixed sigmas."""

from __future__ import annotations

import copy
import logging
import math
import random

import numpy as np
import pytest
import torch
from PIL import Image

from sdcallbacks import ValidationCallback
from sdcallbacks.config import ConfigError, PromptDefaults, PromptEntry
from sdcallbacks.config.metrics import ValLossConfig
from sdcallbacks.metrics.loss import ValidationLoss
from sdcallbacks.prompts import expand_jobs, resolve_prompts
from sdcallbacks.sampling import ValidationSampler
from sdcallbacks.sampling.families import ModulesError
from sdcallbacks.sampling.modules import TrainingModules
from sdcallbacks.testing.modules import perturb_lora, tiny_flux_modules, tiny_sd3_modules
from tests.helpers import MeanBrightness, Scripted, logged_aggregates, pipeline_of, run_config, start

FAMILIES = ["sd3", "flux"]


def family_modules(family, clip_tokenizer, t5_tokenizer, **options) -> TrainingModules:
    build = tiny_sd3_modules if family == "sd3" else tiny_flux_modules
    return build(clip_tokenizer, t5_tokenizer, **options)


@pytest.fixture
def jobs():
    defaults = PromptDefaults(num_images=3, width=32, height=32, steps=3, guidance_scale=3.0)
    entries = [PromptEntry(prompt="red square"), PromptEntry(prompt="blue square, white background")]
    return expand_jobs(resolve_prompts(entries, defaults, 0))


def pixels(images):
    return np.stack([np.asarray(im) for im in images])


@pytest.mark.parametrize("family", FAMILIES)
def test_each_family_draws_what_its_diffusers_pipeline_draws(family, clip_tokenizer, t5_tokenizer, jobs):
    """The images are the family pipeline's own, called with one CPU generator per image, and every text
    encoder conditions them (T5 included)."""
    modules = family_modules(family, clip_tokenizer, t5_tokenizer)
    perturb_lora(modules, step=1)
    images = pixels(ValidationSampler(modules, batch_size=3).sample(jobs[:3]))
    pipe = pipeline_of(modules)
    with torch.no_grad():
        reference = pipe(
            prompt=[job.prompt.prompt for job in jobs[:3]],
            width=32,
            height=32,
            num_inference_steps=3,
            guidance_scale=3.0,
            generator=[torch.Generator().manual_seed(job.seed) for job in jobs[:3]],
        ).images
    np.testing.assert_array_equal(images, pixels(reference))
    t5 = modules.text_encoder_3 if family == "sd3" else modules.text_encoder_2
    with torch.no_grad():
        for param in t5.parameters():
            param.mul_(1.5)
    assert not np.array_equal(images, pixels(ValidationSampler(modules, batch_size=3).sample(jobs[:3])))


@pytest.mark.parametrize("family", FAMILIES)
def test_every_sampling_guarantee_holds_for_the_family(family, clip_tokenizer, t5_tokenizer, jobs):
    """Same pixels whatever the batch split; training's random streams, submodule modes, dtypes and
    scheduler untouched with LoRA dropout on; the base variant is the model without its LoRA; the EMA
    weights swap in and back bit for bit."""
    from diffusers.training_utils import EMAModel

    modules = family_modules(family, clip_tokenizer, t5_tokenizer, lora_dropout=0.5)
    perturb_lora(modules, step=1)
    transformer = modules.transformer
    transformer.train()
    transformer.transformer_blocks[0].eval()  # a part kept in eval on purpose stays so
    modes = {name: m.training for name, m in transformer.named_modules()}
    params = {n: (p.dtype, p.requires_grad) for n, p in transformer.named_parameters()}
    scheduler = modules.noise_scheduler
    timesteps = scheduler.timesteps.clone()

    torch.manual_seed(5), np.random.seed(5), random.seed(5)
    whole = pixels(ValidationSampler(modules, batch_size=6).sample(jobs))
    drawn_after = (random.random(), np.random.rand(), torch.rand(3).tolist())
    torch.manual_seed(5), np.random.seed(5), random.seed(5)
    assert drawn_after == (random.random(), np.random.rand(), torch.rand(3).tolist())
    split = pixels(ValidationSampler(modules, batch_size=1).sample(jobs))
    subset = pixels(ValidationSampler(modules, batch_size=2).sample(jobs[1::2]))  # another rank's share
    assert np.abs(whole.astype(int) - split.astype(int)).max() <= 1  # summation order only
    assert np.abs(whole[1::2].astype(int) - subset.astype(int)).max() <= 1
    assert not np.array_equal(whole[0], whole[1])
    assert {name: m.training for name, m in transformer.named_modules()} == modes
    assert {n: (p.dtype, p.requires_grad) for n, p in transformer.named_parameters()} == params
    assert torch.equal(scheduler.timesteps, timesteps)

    sampler = ValidationSampler(modules, batch_size=3)
    base = pixels(sampler.sample(jobs[:3], variant="base"))
    assert not np.array_equal(base, whole[:3])
    assert {n: p.requires_grad for n, p in transformer.named_parameters()} == {
        n: g for n, (_, g) in params.items()
    }
    pristine = copy.deepcopy(modules)
    pristine.transformer.disable_adapters()
    np.testing.assert_array_equal(pixels(ValidationSampler(pristine, batch_size=3).sample(jobs[:3])), base)

    ema = EMAModel(transformer.parameters())
    with torch.no_grad():
        for p in ema.shadow_params:
            p.add_(0.01)
    modules.ema = ema
    before = [p.detach().clone() for p in transformer.parameters()]
    assert not np.array_equal(pixels(sampler.sample(jobs[:3], variant="ema")), whole[:3])
    assert all(torch.equal(a, b) for a, b in zip(before, transformer.parameters()))


def test_sd3_draws_without_its_t5_encoder(clip_tokenizer, t5_tokenizer, jobs):
    """StableDiffusion3Pipeline runs without text_encoder_3 (zeros in T5's place): so does validation."""
    modules = tiny_sd3_modules(clip_tokenizer, t5_tokenizer, t5=False)
    images = pixels(ValidationSampler(modules, batch_size=2).sample(jobs[:2]))
    with torch.no_grad():
        reference = pipeline_of(modules)(
            prompt=[job.prompt.prompt for job in jobs[:2]],
            width=32,
            height=32,
            num_inference_steps=3,
            guidance_scale=3.0,
            generator=[torch.Generator().manual_seed(job.seed) for job in jobs[:2]],
        ).images
    np.testing.assert_array_equal(images, pixels(reference))


def test_flux_reads_guidance_scale_as_its_distilled_guidance_and_ignores_negatives(
    clip_tokenizer, t5_tokenizer, caplog
):
    defaults = PromptDefaults(num_images=1, width=32, height=32, steps=2, guidance_scale=1.0)
    entries = [
        PromptEntry(prompt="red square", negative_prompt="blurry", seeds=[3]),
        PromptEntry(prompt="red square", guidance_scale=6.0, seeds=[3]),
    ]
    jobs = expand_jobs(resolve_prompts(entries, defaults, 0))
    modules = tiny_flux_modules(clip_tokenizer, t5_tokenizer)
    sampler = ValidationSampler(modules, batch_size=2)
    with caplog.at_level(logging.WARNING, logger="sdcallbacks"):
        low, high = pixels(sampler.sample(jobs))
        sampler.sample(jobs)
    assert not np.array_equal(low, high)  # the guidance embedding reads it
    warnings = [r.getMessage() for r in caplog.records if "negative_prompt is ignored" in r.getMessage()]
    assert len(warnings) == 1


@pytest.mark.parametrize("family", FAMILIES)
def test_a_prompt_longer_than_t5_reads_is_warned_once(family, clip_tokenizer, t5_tokenizer, caplog):
    words = " ".join(["red"] * 30)  # 31 T5 tokens with </s>; 32 CLIP tokens
    defaults = PromptDefaults(num_images=1, width=32, height=32, steps=1, guidance_scale=1.0)
    jobs = expand_jobs(resolve_prompts([PromptEntry(prompt=words)], defaults, 0))
    modules = family_modules(family, clip_tokenizer, t5_tokenizer)
    sampler = ValidationSampler(modules, batch_size=1, max_sequence_length=16)
    with caplog.at_level(logging.WARNING, logger="sdcallbacks"):
        sampler.sample(jobs)
        sampler.sample(jobs)
    warnings = [r.getMessage() for r in caplog.records if "text encoder reads" in r.getMessage()]
    assert len(warnings) == 1 and "has 31 tokens; the text encoder reads 16" in warnings[0]


def shift(sigma: float, scheduler_config, tokens: int) -> float:
    """The scheduler's timestep shift, by hand: Flux's exponential shift with mu interpolated linearly in
    the token count; SD3's static one."""
    c = scheduler_config
    if c.use_dynamic_shifting:
        slope = (c.max_shift - c.base_shift) / (c.max_image_seq_len - c.base_image_seq_len)
        mu = c.base_shift + slope * (tokens - c.base_image_seq_len)
        return math.exp(mu) / (math.exp(mu) + (1 / sigma - 1))
    return c.shift * sigma / (1 + (c.shift - 1) * sigma)


def hand_flow_loss(modules, family, image, caption, resolution, sigmas, seed, guidance) -> float:
    """Flow-matching loss re-derived from the modules themselves: CLIP/T5 conditioning as the SD3 and Flux
    papers' pipelines build it, (mean - shift) * scale latents, x = (1 - s) x0 + s noise, the velocity
    target noise - x0, Flux's 2x2 packing and position ids written out."""
    from sdcallbacks.metrics.loss.val_loss import to_pixels

    vae, transformer = modules.vae, modules.transformer
    with torch.no_grad():
        mean = vae.encode(to_pixels(image, resolution)[None]).latent_dist.mean
        x0 = (mean - vae.config.shift_factor) * vae.config.scaling_factor
        noise = torch.randn(x0.shape[1:], generator=torch.Generator().manual_seed(seed))[None]
        _, c, h, w = x0.shape

        def ids(tokenizer, length):
            return tokenizer(
                [caption], padding="max_length", max_length=length, truncation=True, return_tensors="pt"
            ).input_ids

        if family == "sd3":
            clip_hidden, pooled = [], []
            for enc, tok in (
                (modules.text_encoder, modules.tokenizer),
                (modules.text_encoder_2, modules.tokenizer),
            ):
                out = enc(ids(tok, 77), output_hidden_states=True)
                clip_hidden.append(out.hidden_states[-2])
                pooled.append(out.text_embeds)
            clip_hidden = torch.cat(clip_hidden, dim=-1)
            t5 = modules.text_encoder_3(ids(modules.tokenizer_3, 256))[0]
            clip_hidden = torch.nn.functional.pad(clip_hidden, (0, t5.shape[-1] - clip_hidden.shape[-1]))
            context, pooled = torch.cat([clip_hidden, t5], dim=-2), torch.cat(pooled, dim=-1)
            tokens = (h // 2) * (w // 2)
        else:
            pooled = modules.text_encoder(ids(modules.tokenizer, 77)).pooler_output
            context = modules.text_encoder_2(ids(modules.tokenizer_2, 512))[0]
            tokens = (h // 2) * (w // 2)
            rows = torch.arange(h // 2).repeat_interleave(w // 2)
            cols = torch.arange(w // 2).repeat(h // 2)
            image_ids = torch.stack([torch.zeros_like(rows), rows, cols], dim=-1).float()
        losses = []
        for s in sigmas:
            sigma = shift(s, modules.noise_scheduler.config, tokens)
            noisy = (1 - sigma) * x0 + sigma * noise
            if family == "sd3":
                prediction = transformer(
                    hidden_states=noisy,
                    timestep=torch.tensor([sigma * 1000]),
                    encoder_hidden_states=context,
                    pooled_projections=pooled,
                ).sample
            else:
                # (1, c, h, w) -> (1, h/2 * w/2, c * 4): each 2x2 patch one token, channels first
                packed = (
                    noisy.view(1, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5).reshape(1, -1, c * 4)
                )
                out = transformer(
                    hidden_states=packed,
                    timestep=torch.tensor([sigma]),
                    guidance=torch.tensor([guidance]),
                    pooled_projections=pooled,
                    encoder_hidden_states=context,
                    txt_ids=torch.zeros(context.shape[1], 3),
                    img_ids=image_ids,
                ).sample
                prediction = (
                    out.view(1, h // 2, w // 2, c, 2, 2).permute(0, 3, 1, 4, 2, 5).reshape(1, c, h, w)
                )
            losses.append(float(((prediction - (noise - x0)) ** 2).mean()))
    return float(np.mean(losses))


@pytest.mark.parametrize("family", FAMILIES)
def test_val_loss_equals_a_hand_computed_flow_matching_loss(family, clip_tokenizer, t5_tokenizer, tmp_path):
    rng = np.random.default_rng(4)
    image = Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
    image.save(tmp_path / "a.png")
    (tmp_path / "a.txt").write_text("a red square", encoding="utf-8")
    modules = family_modules(family, clip_tokenizer, t5_tokenizer)
    perturb_lora(modules, step=2)
    for module in modules.torch_modules():
        module.eval()
    sigmas = [1.0, 0.6, 0.3]
    config = ValLossConfig(data=tmp_path, resolution=32, sigmas=sigmas, seed=5, guidance=2.5)
    got = ValidationLoss(config).evaluate(modules)
    assert sorted(got) == sorted(["val_loss", "val_loss/sigma1", "val_loss/sigma0.6", "val_loss/sigma0.3"])
    expected = hand_flow_loss(modules, family, image, "a red square", 32, sigmas, seed=5, guidance=2.5)
    assert got["val_loss"] == pytest.approx(expected, rel=1e-5)
    one = hand_flow_loss(modules, family, image, "a red square", 32, [0.6], seed=5, guidance=2.5)
    assert got["val_loss/sigma0.6"] == pytest.approx(one, rel=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_a_transformer_lora_checkpoint_redraws_its_images_in_a_fresh_pipeline(
    family, tmp_path, clip_tokenizer, t5_tokenizer
):
    """The best step's LoRA is saved as the family pipeline's save_lora_weights saves it
    (transformer_lora_layers with its adapter config, alpha != r) and a fresh pipeline's load_lora_weights
    draws its images pixel for pixel."""
    from peft import LoraConfig

    modules = family_modules(family, clip_tokenizer, t5_tokenizer, lora=False)
    pristine = copy.deepcopy(modules)
    targets = ["to_q", "to_k", "to_v", "to_out.0"]
    modules.transformer.add_adapter(
        LoraConfig(r=4, lora_alpha=8, init_lora_weights="gaussian", target_modules=targets)
    )
    perturb_lora(modules, step=3, scale=0.3)
    config = run_config(tmp_path, monitor="val/scripted/mean", sampling={"baseline": False})
    cb = ValidationCallback(config, metrics=[Scripted([1.0, 0.5])])
    start(cb, modules)
    assert cb.on_step_end(2).should_save
    cb.on_step_end(4)
    assert cb.best_step == 2

    lora_off = ValidationSampler(pristine, batch_size=2).sample(cb.validation.jobs)
    pipe = pipeline_of(pristine)
    pipe.load_lora_weights(cb.best_model_path)
    redrawn = ValidationSampler(TrainingModules.from_components(pipe.components), batch_size=2).sample(
        cb.validation.jobs
    )
    for job, image, plain in zip(cb.validation.jobs, redrawn, lora_off):
        drawn = np.asarray(Image.open(tmp_path / "out" / "samples" / "step_0000002" / f"{job.file_stem}.png"))
        np.testing.assert_array_equal(np.asarray(image), drawn)
        assert not np.array_equal(np.asarray(plain), drawn)


@pytest.mark.parametrize("family", FAMILIES)
def test_async_scoring_equals_sync_for_the_family(family, tmp_path, clip_tokenizer, t5_tokenizer):
    """Background scoring logs what synchronous scoring logs and keeps the same checkpoint: the
    transformer's LoRA is captured at the validated step, before training moves it on."""
    from safetensors.torch import load_file

    runs = {}
    for mode in ("sync", "async"):
        modules = family_modules(family, clip_tokenizer, t5_tokenizer)
        config = run_config(tmp_path / mode, scoring={"mode": mode}, sampling={"baseline": False})
        cb = ValidationCallback(config, metrics=[MeanBrightness()])
        start(cb, modules)
        for step in range(1, 7):
            perturb_lora(modules, step)
            cb.on_step_end(step)
        cb.on_train_end(6)
        runs[mode] = cb
    sync, background = runs["sync"], runs["async"]
    assert logged_aggregates(tmp_path / "async" / "out") == logged_aggregates(tmp_path / "sync" / "out")
    assert background.best_step == sync.best_step
    name = "pytorch_lora_weights.safetensors"
    ours, theirs = (load_file(f"{cb.best_model_path}/{name}") for cb in (background, sync))
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert any(k.startswith("transformer.") for k in ours)


def test_transformer_families_are_told_apart_and_mixed_modules_named(tmp_path, clip_tokenizer, t5_tokenizer):
    sd3 = tiny_sd3_modules(clip_tokenizer, t5_tokenizer)
    flux = tiny_flux_modules(clip_tokenizer, t5_tokenizer)
    cases = {
        "a Flux transformer given as unet": (
            {**vars(flux), "transformer": None, "unet": flux.transformer},
            "unet is a FluxTransformer2DModel: a flux model's denoiser is passed as transformer=",
        ),
        "Flux with SD3's CLIP where it reads T5": (
            {**vars(flux), "text_encoder_2": sd3.text_encoder_2, "tokenizer_2": clip_tokenizer},
            "text_encoder_2 is a CLIPTextModelWithProjection but 'flux' reads a T5 encoder there",
        ),
        "Flux's T5 with a CLIP tokenizer": (
            {**vars(flux), "tokenizer_2": clip_tokenizer},
            r"tokenizer_2 has 49408 tokens but text_encoder_2 embeds 8292: a tokenizer of another model",
        ),
        "Flux with a third text encoder": (
            {**vars(flux), "text_encoder_3": sd3.text_encoder_3, "tokenizer_3": t5_tokenizer},
            "the transformer is 'flux', which has no text_encoder_3: modules of two families mixed",
        ),
        "SD3 without its second CLIP": (
            {**vars(sd3), "text_encoder_2": None, "tokenizer_2": None},
            r"text_encoder_2/tokenizer_2 not given \(None\)",
        ),
        "SD3 with a T5 but no T5 tokenizer": (
            {**vars(sd3), "tokenizer_3": None},
            "pass text_encoder_3 and tokenizer_3 together",
        ),
    }
    for what, (modules, message) in cases.items():
        cb = ValidationCallback(run_config(tmp_path), metrics=[MeanBrightness()])
        with pytest.raises(ModulesError, match=message):
            cb.on_train_start(**modules)
        assert not (tmp_path / "out").exists(), what
    cb = ValidationCallback(run_config(tmp_path, sampling={"family": "sd3"}), metrics=[MeanBrightness()])
    with pytest.raises(ModulesError, match=r"sampling\.family is 'sd3' but the modules are 'flux'"):
        start(cb, flux)


def test_what_a_family_cannot_do_is_a_located_config_error_before_training(
    tmp_path, clip_tokenizer, t5_tokenizer
):
    """Sides that Flux's packed latents cannot take (16 with an 8x VAE), a DDPM sampler for a
    flow-matching model, val_loss against a noise scheduler of another kind: one error, before training."""
    from diffusers import DDPMScheduler

    from sdcallbacks.testing import pretrain

    flux = tiny_flux_modules(clip_tokenizer, t5_tokenizer)
    flux.vae = pretrain.tiny_vae(  # the published VAE's 8x downscale: 3 downsamplings
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(32, 32, 32, 32),
    )
    (tmp_path / "held_out").mkdir()
    Image.new("RGB", (32, 32), "red").save(tmp_path / "held_out" / "a.png")
    (tmp_path / "held_out" / "a.txt").write_text("red square", encoding="utf-8")
    overrides = {
        "prompts": [{"name": "wide", "prompt": "red square", "width": 40, "height": 32}],
        "sampling": {"scheduler": "ddim"},
        "metrics": {"val_loss": {"data": str(tmp_path / "held_out")}},
    }
    config = run_config(tmp_path, **overrides)
    cb = ValidationCallback(config, metrics=[MeanBrightness()])
    flux.noise_scheduler = DDPMScheduler()
    with pytest.raises(ConfigError) as raised:
        start(cb, flux)
    message = str(raised.value)
    assert "sampling.scheduler: 'ddim' samples DDPM-trained models; flux is flow-matching" in message
    assert (
        "prompt 'wide': width and height are 40x32 px; these flux modules draw sides that are a "
        "multiple of 16" in message
    )
    assert "metrics.val_loss: flux is flow-matching but the noise scheduler is a DDPMScheduler" in message
    assert not (tmp_path / "out").exists()


def test_a_full_fine_tune_saves_the_transformer_and_restores_it_at_the_end(
    tmp_path, clip_tokenizer, t5_tokenizer
):
    """Without adapters the best step's transformer is saved in diffusers' layout (``transformer/``, which
    ``FluxTransformer2DModel.from_pretrained`` loads) and ``restore_best_at_end`` loads it back."""
    from diffusers import FluxTransformer2DModel

    modules = tiny_flux_modules(clip_tokenizer, t5_tokenizer, lora=False)

    def train_step(step: int) -> None:
        generator = torch.Generator().manual_seed(step)
        with torch.no_grad():
            for param in modules.transformer.parameters():
                param.add_(0.05 * torch.randn(param.shape, generator=generator))

    overrides = {"sampling": {"baseline": False}, "early_stopping": {"restore_best_at_end": True}}
    config = run_config(tmp_path, monitor="val/scripted/mean", **overrides)
    cb = ValidationCallback(config, metrics=[Scripted([1.0, 0.5])])
    start(cb, modules)
    train_step(2)
    cb.on_step_end(2)
    best = {k: v.clone() for k, v in modules.transformer.state_dict().items()}
    train_step(4)
    cb.on_step_end(4)  # worse
    cb.on_train_end(4)
    assert cb.best_step == 2
    assert all(torch.equal(v, best[k]) for k, v in modules.transformer.state_dict().items())
    saved = FluxTransformer2DModel.from_pretrained(f"{cb.best_model_path}/transformer").state_dict()
    assert saved.keys() == best.keys() and all(torch.equal(saved[k], best[k]) for k in best)
