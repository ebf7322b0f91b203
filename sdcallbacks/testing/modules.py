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


def tiny_sdxl_modules(tokenizer: Any, seed: int = 0, lora: bool = True) -> TrainingModules:
    """Random-weight tiny SDXL modules: two text encoders (the second with a projection, whose pooled
    output and the six ``add_time_ids`` condition the UNet's ``text_time`` embedding), a LoRA on the UNet
    unless ``lora`` is off."""
    from peft import LoraConfig
    from transformers import CLIPTextModelWithProjection

    torch.manual_seed(seed)
    text_encoder = pretrain.tiny_text_encoder(len(tokenizer))
    text_encoder_2 = CLIPTextModelWithProjection(text_encoder.config)
    unet = pretrain.tiny_unet(
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=64,  # both encoders' hidden states side by side: 32 + 32
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=32 + 6 * 8,  # pooled text + six time ids
    )
    if lora:
        targets = ["to_q", "to_k", "to_v"]
        unet.add_adapter(LoraConfig(r=4, lora_alpha=4, init_lora_weights="gaussian", target_modules=targets))
    return TrainingModules(
        unet=unet,
        vae=pretrain.tiny_vae(),
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        noise_scheduler=pretrain.noise_scheduler(),
        text_encoder_2=text_encoder_2,
        tokenizer_2=tokenizer,
    )
