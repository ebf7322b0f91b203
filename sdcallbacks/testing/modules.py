"""Random-weight tiny training modules (the tiny world's architectures) with a LoRA on the UNet: built in
about a second, identical for the same seed in every process."""

from __future__ import annotations

from typing import Any

import torch

from sdcallbacks.sampling.pipeline import TrainingModules
from sdcallbacks.testing import pretrain


def tiny_lora_modules(tokenizer: Any, seed: int = 0, lora_dropout: float = 0.5) -> TrainingModules:
    from peft import LoraConfig

    torch.manual_seed(seed)
    unet = pretrain.tiny_unet()
    unet.add_adapter(
        LoraConfig(
            r=4,
            lora_alpha=4,
            lora_dropout=lora_dropout,
            init_lora_weights="gaussian",
            target_modules=["to_q", "to_k", "to_v", "to_out.0"],
        )
    )
    return TrainingModules(
        unet=unet,
        vae=pretrain.tiny_vae(),
        text_encoder=pretrain.tiny_text_encoder(len(tokenizer)),
        tokenizer=tokenizer,
        noise_scheduler=pretrain.noise_scheduler(),
    )


def perturb_lora(modules: TrainingModules, step: int, scale: float = 0.2) -> None:
    """A stand-in optimizer step: seeded noise on the LoRA weights (changes the images, deterministically)."""
    generator = torch.Generator().manual_seed(1000 + step)
    with torch.no_grad():
        for name, param in modules.unet.named_parameters():
            if "lora" in name:
                param.add_(scale * torch.randn(param.shape, generator=generator))
