"""The sampler leaves training exactly as it was, and draws the same pixels for the same job."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from sdcallbacks.config import PromptDefaults, PromptEntry
from sdcallbacks.prompts import expand_jobs, resolve_prompts
from sdcallbacks.sampling import ValidationSampler


@pytest.fixture
def jobs():
    defaults = PromptDefaults(num_images=3, width=32, height=32, steps=2, guidance_scale=3.0)
    return expand_jobs(
        resolve_prompts([PromptEntry(prompt="red square"), PromptEntry(prompt="blue square")], defaults, 0)
    )


def pixels(images):
    return np.stack([np.asarray(im) for im in images])


def draw_training_randoms():
    return (random.random(), np.random.rand(), torch.rand(3).tolist())


def test_global_rng_stream_is_untouched_with_lora_dropout_active(tiny_modules, jobs):
    tiny_modules.unet.train()  # LoRA dropout (p=0.5) would eat global RNG if left on
    torch.manual_seed(5), np.random.seed(5), random.seed(5)
    expected = draw_training_randoms()

    torch.manual_seed(5), np.random.seed(5), random.seed(5)
    ValidationSampler(tiny_modules, batch_size=2).sample(jobs[:2])
    assert draw_training_randoms() == expected


def test_same_pixels_across_calls_and_batch_splits(tiny_modules, jobs):
    tiny_modules.unet.train()
    whole = pixels(ValidationSampler(tiny_modules, batch_size=6).sample(jobs))
    again = pixels(ValidationSampler(tiny_modules, batch_size=6).sample(jobs))
    split = pixels(ValidationSampler(tiny_modules, batch_size=1).sample(jobs))
    subset = pixels(ValidationSampler(tiny_modules, batch_size=2).sample(jobs[1::2]))  # another rank's share
    np.testing.assert_array_equal(whole, again)
    # Batch composition changes float summation order; allow at most 1/255 on a few pixels.
    assert np.abs(whole.astype(int) - split.astype(int)).max() <= 1
    assert np.abs(whole[1::2].astype(int) - subset.astype(int)).max() <= 1
    assert not np.array_equal(whole[0], whole[1])  # different seeds differ


def test_every_submodule_mode_is_restored_exactly(tiny_modules, jobs):
    unet = tiny_modules.unet
    unet.train()
    frozen = unet.down_blocks[0]
    frozen.eval()  # a part kept in eval on purpose must stay so
    tiny_modules.text_encoder.eval()
    before = {name: m.training for name, m in unet.named_modules()}
    seen_training = []

    def spy(module, args, kwargs):
        seen_training.append(any(m.training for m in module.modules()))

    handle = unet.register_forward_pre_hook(spy, with_kwargs=True)
    ValidationSampler(tiny_modules, batch_size=3).sample(jobs[:3])
    handle.remove()
    assert seen_training and not any(seen_training)  # eval during sampling: no dropout
    assert {name: m.training for name, m in unet.named_modules()} == before
    assert not tiny_modules.text_encoder.training


def test_dtypes_devices_and_training_scheduler_are_untouched(tiny_modules, jobs):
    unet = tiny_modules.unet
    before = {n: (p.dtype, p.device, p.requires_grad) for n, p in unet.named_parameters()}
    scheduler = tiny_modules.noise_scheduler
    timesteps = scheduler.timesteps.clone()
    num_inference_steps = scheduler.num_inference_steps
    ValidationSampler(tiny_modules, batch_size=3, mixed_precision="bf16").sample(jobs[:3])
    assert {n: (p.dtype, p.device, p.requires_grad) for n, p in unet.named_parameters()} == before
    assert torch.equal(scheduler.timesteps, timesteps)
    assert scheduler.num_inference_steps == num_inference_steps
    # The next training step still works in fp32 with gradients on the LoRA parameters only.
    unet.train()
    out = unet(torch.randn(1, 4, 16, 16), torch.tensor([10]), torch.randn(1, 77, 32)).sample
    out.mean().backward()
    assert all(p.grad is not None for p in unet.parameters() if p.requires_grad)


def test_base_variant_disables_and_re_enables_lora(tiny_modules, jobs):
    # Make the LoRA matter, then compare base images with and without it.
    with torch.no_grad():
        for name, p in tiny_modules.unet.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    sampler = ValidationSampler(tiny_modules, batch_size=3)
    lora = pixels(sampler.sample(jobs[:3]))
    base = pixels(sampler.sample(jobs[:3], variant="base"))
    assert not np.array_equal(lora, base)
    np.testing.assert_array_equal(pixels(sampler.sample(jobs[:3])), lora)  # adapters back on
    tiny_modules.unet.disable_adapters()
    np.testing.assert_array_equal(pixels(sampler.sample(jobs[:3])), base)  # base == LoRA off


def test_ema_variant_swaps_weights_back_bit_exactly(tiny_modules, jobs):
    from diffusers.training_utils import EMAModel

    unet = tiny_modules.unet
    ema = EMAModel(unet.parameters())
    with torch.no_grad():
        for p in ema.shadow_params:
            p.add_(0.01)
    tiny_modules.ema = ema
    before = [p.detach().clone() for p in unet.parameters()]
    ValidationSampler(tiny_modules, batch_size=3).sample(jobs[:3], variant="ema")
    assert all(torch.equal(a, b) for a, b in zip(before, unet.parameters()))


def test_restore_happens_even_when_sampling_fails(tiny_modules, jobs):
    """The UNet raises mid-sampling (after drawing random numbers, with the adapters disabled for the base
    variant): modes, random streams, adapters and requires_grad are all as they were."""
    from sdcallbacks.testing.modules import perturb_lora

    perturb_lora(tiny_modules, step=1)
    unet = tiny_modules.unet
    unet.train()
    modes = {name: module.training for name, module in unet.named_modules()}
    trainable = {name: p.requires_grad for name, p in unet.named_parameters()}
    sampler = ValidationSampler(tiny_modules, batch_size=2)
    lora = pixels(sampler.sample(jobs[:2]))

    def explode(module, args):
        torch.rand(100)  # the failure happens after the sampler's streams moved
        raise RuntimeError("unet exploded")

    hook = unet.register_forward_pre_hook(explode)
    torch.manual_seed(1)
    expected = torch.rand(2)
    torch.manual_seed(1)
    try:
        with pytest.raises(RuntimeError, match="unet exploded"):
            sampler.sample(jobs[:2], variant="base")
    finally:
        hook.remove()
    assert torch.equal(torch.rand(2), expected)
    assert {name: module.training for name, module in unet.named_modules()} == modes
    assert {name: p.requires_grad for name, p in unet.named_parameters()} == trainable
    np.testing.assert_array_equal(pixels(sampler.sample(jobs[:2])), lora)  # adapters are back on


def test_the_base_variant_leaves_every_requires_grad_as_it_was(tiny_modules, jobs):
    """peft's enable_adapters() after the LoRA-off baseline would make frozen LoRA weights trainable."""
    from sdcallbacks.testing.modules import perturb_lora

    perturb_lora(tiny_modules, step=1)  # LoRA B starts at zero: make the adapters draw something
    unet = tiny_modules.unet
    for name, param in unet.named_parameters():
        if "to_k.lora_A" in name:
            param.requires_grad_(False)  # the user froze these
    before = {name: p.requires_grad for name, p in unet.named_parameters()}
    frozen = [name for name, trainable in before.items() if "lora" in name and not trainable]
    assert frozen
    base = ValidationSampler(tiny_modules, batch_size=2).sample(jobs[:2], variant="base")
    assert {name: p.requires_grad for name, p in unet.named_parameters()} == before
    model = ValidationSampler(tiny_modules, batch_size=2).sample(jobs[:2])
    assert not np.array_equal(pixels(base), pixels(model))  # the adapters were off, then back on


def diffusers_images(pipe, jobs) -> np.ndarray:
    """diffusers' own pipeline call for ``jobs``: one CPU generator per image, seeded with its job's seed."""
    prompt = jobs[0].prompt
    out = pipe(
        prompt=[job.prompt.prompt for job in jobs],
        width=prompt.width,
        height=prompt.height,
        num_inference_steps=prompt.steps,
        guidance_scale=prompt.guidance_scale,
        generator=[torch.Generator("cpu").manual_seed(job.seed) for job in jobs],
        output_type="pil",
    )
    return pixels(out.images)


@pytest.mark.parametrize(
    ("name", "scheduler_class"),
    [
        ("ddim", "DDIMScheduler"),
        ("euler", "EulerDiscreteScheduler"),
        ("euler_a", "EulerAncestralDiscreteScheduler"),
        ("dpm++", "DPMSolverMultistepScheduler"),
        ("pndm", "PNDMScheduler"),
        ("training", "DDPMScheduler"),  # the training scheduler's own class
    ],
)
def test_each_scheduler_name_draws_what_diffusers_draws_with_that_scheduler(
    tiny_modules, jobs, name, scheduler_class
):
    import diffusers

    m = tiny_modules
    images = pixels(ValidationSampler(m, scheduler=name, batch_size=2).sample(jobs[:2]))
    for module in m.torch_modules():
        module.eval()  # the sampler samples in eval mode (LoRA dropout off)
    options = {"skip_prk_steps": True} if name == "pndm" else {}  # as SD's published PNDM config
    scheduler = getattr(diffusers, scheduler_class).from_config(m.noise_scheduler.config, **options)
    pipe = diffusers.StableDiffusionPipeline(
        vae=m.vae,
        text_encoder=m.text_encoder,
        tokenizer=m.tokenizer,
        unet=m.unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    np.testing.assert_array_equal(images, diffusers_images(pipe, jobs[:2]))
    if name != "ddim":  # the name selects a different sampler, not ddim under another label
        ddim = pixels(ValidationSampler(m, scheduler="ddim", batch_size=2).sample(jobs[:2]))
        assert not np.array_equal(images, ddim)


def test_sdxl_modules_sample_through_diffusers_sdxl_pipeline_with_both_text_encoders(clip_tokenizer, jobs):
    """``text_encoder_2``/``tokenizer_2`` make it SDXL: the images are diffusers' StableDiffusionXLPipeline's,
    and the second text encoder conditions them."""
    import diffusers

    from sdcallbacks.testing.modules import tiny_sdxl_modules

    m = tiny_sdxl_modules(clip_tokenizer)
    images = pixels(ValidationSampler(m, batch_size=2).sample(jobs[:2]))
    names = ("vae", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "unet")
    scheduler = diffusers.DDIMScheduler.from_config(m.noise_scheduler.config)
    components = {name: getattr(m, name) for name in names}
    pipe = diffusers.StableDiffusionXLPipeline(**components, scheduler=scheduler, add_watermarker=False)
    pipe.set_progress_bar_config(disable=True)
    np.testing.assert_array_equal(images, diffusers_images(pipe, jobs[:2]))
    with torch.no_grad():
        for param in m.text_encoder_2.parameters():
            param.mul_(1.5)
    changed = pixels(ValidationSampler(m, batch_size=2).sample(jobs[:2]))
    assert not np.array_equal(images, changed)


def test_a_prompt_longer_than_the_text_encoder_reads_is_warned_once(tiny_modules, caplog):
    import logging

    long = ", ".join(f"tag{i}" for i in range(60))  # well over 77 CLIP tokens
    defaults = PromptDefaults(num_images=2, width=32, height=32, steps=1, guidance_scale=1.0)
    jobs = expand_jobs(resolve_prompts([PromptEntry(prompt=long), PromptEntry(prompt="short")], defaults, 0))
    sampler = ValidationSampler(tiny_modules, batch_size=2)
    with caplog.at_level(logging.WARNING, logger="sdcallbacks"):
        sampler.sample(jobs)
        sampler.sample(jobs)  # the next validation: already warned
    warnings = [r.getMessage() for r in caplog.records if "text encoder reads 77" in r.getMessage()]
    assert len(warnings) == 1 and "tag0, tag1" in warnings[0]


@pytest.mark.parametrize("family", ["sd", "sdxl", "sd3", "flux"])
def test_bf16_weights_with_cpu_autocast_sample_and_keep_every_dtype(family, modules_of, jobs, tmp_path):
    """As diffusers' scripts run mixed precision: frozen weights in bf16, the LoRA in fp32, autocast to
    bf16. Sampling and val_loss work, their results are near fp32's, and no parameter changes dtype."""
    from diffusers.training_utils import cast_training_params

    from sdcallbacks.config.metrics import ValLossConfig
    from sdcallbacks.metrics.loss import ValidationLoss
    from sdcallbacks.testing.modules import perturb_lora
    from sdcallbacks.testing.shapes import draw_square

    modules = modules_of(family)
    perturb_lora(modules, step=1)
    draw_square("red", "white", 32, np.random.default_rng(0)).save(tmp_path / "a.png")
    (tmp_path / "a.txt").write_text("red square", encoding="utf-8")
    loss = ValidationLoss(ValLossConfig(data=tmp_path, resolution=32, timesteps=[500], sigmas=[0.5]))
    full = pixels(ValidationSampler(modules, batch_size=2).sample(jobs[:2])).astype(float)
    full_loss = loss.evaluate(modules)["val_loss"]
    for module in modules.torch_modules():
        module.to(dtype=torch.bfloat16)
    cast_training_params(modules.denoiser, dtype=torch.float32)
    dtypes = {n: p.dtype for m in modules.torch_modules() for n, p in m.named_parameters()}
    half = pixels(ValidationSampler(modules, batch_size=2, mixed_precision="bf16").sample(jobs[:2])).astype(
        float
    )
    half_loss = loss.evaluate(modules, mixed_precision="bf16")["val_loss"]
    assert {n: p.dtype for m in modules.torch_modules() for n, p in m.named_parameters()} == dtypes
    assert np.abs(half - full).mean() < 8  # bf16 rounding, not another image
    assert half_loss == pytest.approx(full_loss, rel=0.05)


def test_sdxls_fp16_vae_is_upcast_to_decode_and_left_fp16_even_when_decoding_fails(clip_tokenizer, jobs):
    """As StableDiffusionXLPipeline does with ``force_upcast``: the fp16 VAE decodes in fp32 (an fp16 SDXL
    VAE overflows), then is fp16 again; a decode that raises after the upcast leaves it fp16 too."""
    from sdcallbacks.testing.modules import tiny_sdxl_modules

    modules = tiny_sdxl_modules(clip_tokenizer)
    assert modules.vae.config.force_upcast
    full = pixels(ValidationSampler(modules, batch_size=2).sample(jobs[:2])).astype(float)
    modules.vae.to(torch.float16)
    decode, seen = modules.vae.decode, []

    def spy(latents, *args, **kwargs):
        seen.append((latents.dtype, next(modules.vae.parameters()).dtype))
        if len(seen) > 1:
            raise RuntimeError("out of memory while decoding")
        return decode(latents, *args, **kwargs)

    modules.vae.decode = spy
    half = pixels(ValidationSampler(modules, batch_size=2).sample(jobs[:2])).astype(float)
    assert seen == [(torch.float32, torch.float32)]
    assert {p.dtype for p in modules.vae.parameters()} == {torch.float16}
    assert np.abs(half - full).mean() < 2  # fp16 encoder-side rounding only
    with pytest.raises(RuntimeError, match="out of memory"):
        ValidationSampler(modules, batch_size=2).sample(jobs[:2])
    assert {p.dtype for p in modules.vae.parameters()} == {torch.float16}
