"""Random-weight tiny training modules of every family (the tiny world's architectures for SD 1.x) with a
LoRA on the denoiser: built in about a second, identical for the same seed in every process."""

from __future__ import annotations

from typing import Any

import torch

from sdcallbacks.sampling.modules import TrainingModules
from sdcallbacks.testing import pretrain


def tiny_lora_modules(
    tokenizer: Any, seed: int = 0, lora_dropout: float = 0.5, lora: bool = True
) -> TrainingModules:
    """Random-weight SD 1.x modules of the tiny world's architectures, a LoRA on the UNet unless ``lora``
    is off."""
    from peft import LoraConfig

    torch.manual_seed(seed)
    unet = pretrain.tiny_unet()
    if lora:
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
        for name, param in modules.denoiser.named_parameters():
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


TRANSFORMER_LORA_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]
# The tiny VAE with SD3/Flux's latent normalisation: a shift before the scale.
FLOW_VAE = {"shift_factor": 0.1, "scaling_factor": 0.6, "use_quant_conv": False, "use_post_quant_conv": False}


def tiny_t5_encoder(vocab_size: int):
    """A one-layer T5 v1.1 encoder (gated GELU), hidden size 64."""
    from transformers import T5Config, T5EncoderModel

    config = T5Config(
        vocab_size=vocab_size,
        d_model=64,
        d_kv=16,
        d_ff=64,
        num_layers=1,
        num_heads=4,
        feed_forward_proj="gated-gelu",
        is_encoder_decoder=False,
    )
    return T5EncoderModel(config)


def _transformer_lora(dropout: float):
    from peft import LoraConfig

    return LoraConfig(
        r=4,
        lora_alpha=4,
        lora_dropout=dropout,
        init_lora_weights="gaussian",
        target_modules=TRANSFORMER_LORA_TARGETS,
    )


def tiny_sd3_modules(
    tokenizer: Any,
    t5_tokenizer: Any,
    seed: int = 0,
    lora: bool = True,
    t5: bool = True,
    lora_dropout: float = 0.0,
) -> TrainingModules:
    """Random-weight tiny SD3 modules: an MMDiT transformer (patch 2), two CLIP encoders with projections
    (pooled 32 + 32), a T5 encoder (or none, as SD3 runs without it) and a flow-matching scheduler with
    SD3's static shift of 3."""
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel
    from transformers import CLIPTextModelWithProjection

    torch.manual_seed(seed)
    clip = pretrain.tiny_text_encoder(len(tokenizer)).config
    transformer = SD3Transformer2DModel(
        sample_size=pretrain.IMAGE_SIZE // 2,
        patch_size=2,
        in_channels=4,
        num_layers=2,
        attention_head_dim=8,
        num_attention_heads=4,
        joint_attention_dim=64,  # T5's width; the two CLIP encoders' 32 + 32 are padded to it
        caption_projection_dim=32,
        pooled_projection_dim=64,
        out_channels=4,
        pos_embed_max_size=32,
    )
    if lora:
        transformer.add_adapter(_transformer_lora(lora_dropout))
    return TrainingModules(
        transformer=transformer,
        vae=pretrain.tiny_vae(**FLOW_VAE),
        text_encoder=CLIPTextModelWithProjection(clip),
        tokenizer=tokenizer,
        text_encoder_2=CLIPTextModelWithProjection(clip),
        tokenizer_2=tokenizer,
        text_encoder_3=tiny_t5_encoder(len(t5_tokenizer)) if t5 else None,
        tokenizer_3=t5_tokenizer if t5 else None,
        noise_scheduler=FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0),
    )


def tiny_flux_modules(
    tokenizer: Any, t5_tokenizer: Any, seed: int = 0, lora: bool = True, lora_dropout: float = 0.0
) -> TrainingModules:
    """Random-weight tiny Flux.1-dev modules: a transformer with a distilled-guidance embedding reading 2x2
    packed latents, CLIP (pooled 32) and T5 (width 64) encoders, and Flux's flow-matching scheduler with
    resolution-dependent shift."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel

    torch.manual_seed(seed)
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=16,  # 4 latent channels x 2x2 packing
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=64,
        pooled_projection_dim=32,
        guidance_embeds=True,
        axes_dims_rope=(4, 4, 8),
    )
    if lora:
        transformer.add_adapter(_transformer_lora(lora_dropout))
    scheduler = FlowMatchEulerDiscreteScheduler(
        num_train_timesteps=1000,
        shift=3.0,
        use_dynamic_shifting=True,
        base_shift=0.5,
        max_shift=1.15,
        base_image_seq_len=256,
        max_image_seq_len=4096,
    )
    return TrainingModules(
        transformer=transformer,
        vae=pretrain.tiny_vae(**FLOW_VAE),
        text_encoder=pretrain.tiny_text_encoder(len(tokenizer)),
        tokenizer=tokenizer,
        text_encoder_2=tiny_t5_encoder(len(t5_tokenizer)),
        tokenizer_2=t5_tokenizer,
        noise_scheduler=scheduler,
    )
