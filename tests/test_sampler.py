"""The sampler leaves training exactly as it was, and draws the same pixels for the same job."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from sdcallbacks.config import PromptDefaults, PromptEntry
from sdcallbacks.prompts import expand_jobs, resolve_prompts
from sdcallbacks.sampling import ValidationSampler, eval_mode, isolated_rng


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
    tiny_modules.ema_unet = ema
    before = [p.detach().clone() for p in unet.parameters()]
    ValidationSampler(tiny_modules, batch_size=3).sample(jobs[:3], variant="ema")
    assert all(torch.equal(a, b) for a, b in zip(before, unet.parameters()))


def test_restore_happens_even_when_sampling_fails(tiny_modules):
    unet = tiny_modules.unet
    unet.train()
    torch.manual_seed(1)
    expected = torch.rand(2)
    torch.manual_seed(1)
    with pytest.raises(RuntimeError), isolated_rng(), eval_mode(unet):
        torch.rand(100)
        raise RuntimeError("metric exploded")
    assert unet.training
    assert torch.equal(torch.rand(2), expected)


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
