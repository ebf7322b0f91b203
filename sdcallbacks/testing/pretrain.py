"""Pretraining of the tiny base model on synthetic shapes (once per cache; minutes on 2 CPU cores).

The base model must already draw its domain for a LoRA to show learning on top of it: the VAE learns
to reconstruct flat colours, then the UNet learns to draw ``<colour> square, <background> background``
for the base colours. The concept colour is left out so that the demo's LoRA has something to learn.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from sdcallbacks.testing.shapes import BACKGROUND_COLOURS, BASE_COLOURS, make_samples, to_tensor

IMAGE_SIZE = 32
Progress = Callable[[str], None]


def tiny_vae(**overrides: Any):
    """The tiny world's VAE; ``overrides`` change its config (SD3/Flux's have a ``shift_factor``)."""
    from diffusers import AutoencoderKL

    config = {
        "in_channels": 3,
        "out_channels": 3,
        "down_block_types": ("DownEncoderBlock2D", "DownEncoderBlock2D"),
        "up_block_types": ("UpDecoderBlock2D", "UpDecoderBlock2D"),
        "block_out_channels": (32, 32),
        "layers_per_block": 1,
        "latent_channels": 4,
        "norm_num_groups": 16,
        "sample_size": IMAGE_SIZE,
    }
    return AutoencoderKL(**{**config, **overrides})


def tiny_text_encoder(vocab_size: int):
    from transformers import CLIPTextConfig, CLIPTextModel

    config = CLIPTextConfig(
        hidden_size=32,
        intermediate_size=64,
        num_attention_heads=4,
        num_hidden_layers=2,
        vocab_size=vocab_size,
        max_position_embeddings=77,
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=49407,
        projection_dim=32,
    )
    return CLIPTextModel(config)


def tiny_unet(**overrides: Any):
    """The tiny world's UNet; ``overrides`` change its config (the SDXL test modules add ``text_time``)."""
    from diffusers import UNet2DConditionModel

    config = {
        "sample_size": IMAGE_SIZE // 2,
        "in_channels": 4,
        "out_channels": 4,
        # Cross-attention at both resolutions: with it only at 8x8 (twice as fast to pretrain) a LoRA
        # could not move the colour of the square in a few hundred steps.
        "down_block_types": ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        "block_out_channels": (32, 64),
        "layers_per_block": 1,
        "cross_attention_dim": 32,
        "attention_head_dim": 8,
        "norm_num_groups": 16,
    }
    return UNet2DConditionModel(**{**config, **overrides})


def noise_scheduler():
    from diffusers import DDPMScheduler

    return DDPMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        steps_offset=1,
        prediction_type="epsilon",
    )


REPORT_EVERY = 25  # steps between progress lines (a few seconds each on 2 idle cores)


def _report(progress: Progress, what: str, step: int, total: int, loss: float, start: float) -> None:
    elapsed = time.monotonic() - start
    left = elapsed / step * (total - step)
    progress(f"  {what}: step {step}/{total}  loss {loss:.4f}  ({elapsed:.0f}s, about {left:.0f}s left)")


def random_colour_fields(count: int, seed: int) -> torch.Tensor:
    """Blocky fields of random colours in [-1, 1]: every colour at every place."""
    generator = torch.Generator().manual_seed(seed)
    blocks = torch.rand(count, 3, 4, 4, generator=generator) * 2 - 1
    return F.interpolate(blocks, size=IMAGE_SIZE, mode="nearest")


def train_vae(vae, steps: int, batch_size: int, seed: int, progress: Progress) -> float:
    """Reconstruction training; returns the latent scaling factor (1 / std of the latents).

    Random colour fields join the shapes so that colour is encoded the same way everywhere: trained on
    squares alone, the latents of a colour only decoded right in a square-on-background layout, and the
    blurred predictions of early denoising steps decoded to the wrong colour.
    """
    torch.manual_seed(seed)
    samples = make_samples(
        (*BASE_COLOURS, "yellow", "purple"), tuple(BACKGROUND_COLOURS), 512, IMAGE_SIZE, seed
    )
    shapes = to_tensor([s.image for s in samples])
    data = torch.cat([shapes, random_colour_fields(512, seed)])
    optimizer = torch.optim.AdamW(vae.parameters(), lr=2e-3, weight_decay=0.0)
    vae.train()
    start = time.monotonic()
    for step in range(1, steps + 1):
        batch = data[torch.randint(0, len(data), (batch_size,))]
        posterior = vae.encode(batch).latent_dist
        recon = vae.decode(posterior.sample()).sample
        kl_per_element = posterior.kl().mean() / posterior.mean[0].numel()
        loss = F.mse_loss(recon, batch) + 1e-4 * kl_per_element
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step % REPORT_EVERY == 0 or step == steps:
            _report(progress, "vae", step, steps, loss.item(), start)
    vae.eval()
    with torch.no_grad():
        latents = vae.encode(shapes).latent_dist.mean
    return float(1.0 / latents.std())


def train_unet(
    unet, text_encoder, tokenizer, vae, scheduler, steps: int, batch_size: int, seed: int, progress: Progress
) -> None:
    """Text-conditioned denoising on the base colours; the text encoder learns along."""
    torch.manual_seed(seed)
    samples = make_samples(BASE_COLOURS, tuple(BACKGROUND_COLOURS), 600, IMAGE_SIZE, seed + 1)
    images = to_tensor([s.image for s in samples])
    ids = tokenizer(
        [s.caption for s in samples],
        padding="max_length",
        max_length=77,
        truncation=True,
        return_tensors="pt",
    ).input_ids
    with torch.no_grad():
        latents = vae.encode(images).latent_dist.mean * vae.config.scaling_factor
    params = list(unet.parameters()) + list(text_encoder.parameters())
    optimizer = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.0)
    unet.train()
    text_encoder.train()
    start = time.monotonic()
    for step in range(1, steps + 1):
        index = torch.randint(0, len(latents), (batch_size,))
        # Drop 10% of captions so classifier-free guidance has an unconditional branch to use.
        batch_ids = ids[index].clone()
        drop = torch.rand(batch_size) < 0.1
        batch_ids[drop] = tokenizer([""], padding="max_length", max_length=77, return_tensors="pt").input_ids[
            0
        ]
        noise = torch.randn_like(latents[index])
        t = torch.randint(0, scheduler.config.num_train_timesteps, (batch_size,))
        noisy = scheduler.add_noise(latents[index], noise, t)
        hidden = text_encoder(batch_ids)[0]
        loss = F.mse_loss(unet(noisy, t, hidden).sample, noise)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step % REPORT_EVERY == 0 or step == steps:
            _report(progress, "unet", step, steps, loss.item(), start)
    unet.eval()
    text_encoder.eval()
