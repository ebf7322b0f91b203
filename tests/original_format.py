"""A diffusers SD 1.x pipeline written as the single original-format (LDM) checkpoint that kohya and web UI
users have: ``model.diffusion_model.*``, ``first_stage_model.*``, ``cond_stage_model.transformer.*``.

Test fixture only: the product reads such files with diffusers' ``from_single_file``; this writes the
layout of CompVis' ``openaimodel``/``autoencoder`` modules for any block count, so that the tiny world's
architectures can stand in for a real single-file model.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

UNET_RESNET = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}
UNET_TOP = {
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "conv_in": "input_blocks.0.0",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
}
VAE_ATTENTION = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def _split(key: str) -> tuple[str, str]:
    """``"a.b.weight"`` -> ``("a.b", "weight")``."""
    module, _, tensor = key.rpartition(".")
    return module, tensor


def unet_to_original(state: dict[str, torch.Tensor], layers_per_block: int) -> dict[str, torch.Tensor]:
    per_level = layers_per_block + 1  # the resnets of a down level and its downsampler
    out = {}
    for key, value in state.items():
        module, tensor = _split(key)
        if module in UNET_TOP:
            out[f"{UNET_TOP[module]}.{tensor}"] = value
            continue
        if match := re.fullmatch(r"down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", module):
            level, kind, index, rest = int(match[1]), match[2], int(match[3]), match[4]
            block = 1 + level * per_level + index
            target = f"input_blocks.{block}.0.{UNET_RESNET.get(rest, rest)}"
            if kind == "attentions":
                target = f"input_blocks.{block}.1.{rest}"
        elif match := re.fullmatch(r"down_blocks\.(\d+)\.downsamplers\.0\.conv", module):
            target = f"input_blocks.{1 + int(match[1]) * per_level + layers_per_block}.0.op"
        elif match := re.fullmatch(r"mid_block\.(resnets|attentions)\.(\d+)\.(.+)", module):
            kind, index, rest = match[1], int(match[2]), match[3]
            target = (
                f"middle_block.{2 * index}.{UNET_RESNET.get(rest, rest)}"
                if kind == "resnets"
                else f"middle_block.1.{rest}"
            )
        elif match := re.fullmatch(r"up_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", module):
            level, kind, index, rest = int(match[1]), match[2], int(match[3]), match[4]
            block = level * per_level + index
            target = (
                f"output_blocks.{block}.0.{UNET_RESNET.get(rest, rest)}"
                if kind == "resnets"
                else f"output_blocks.{block}.1.{rest}"
            )
        elif match := re.fullmatch(r"up_blocks\.(\d+)\.upsamplers\.0\.conv", module):
            level = int(match[1])
            block = level * per_level + per_level - 1
            has_attention = any(k.startswith(f"up_blocks.{level}.attentions.") for k in state)
            target = f"output_blocks.{block}.{2 if has_attention else 1}.conv"
        else:
            raise KeyError(f"no original-format name for UNet key {key}")
        out[f"{target}.{tensor}"] = value
    return out


def vae_to_original(state: dict[str, torch.Tensor], up_levels: int) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in state.items():
        module, tensor = _split(key)
        module = module.replace("conv_norm_out", "norm_out")
        if match := re.fullmatch(r"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", module):
            module = f"encoder.down.{match[1]}.block.{match[2]}.{match[3]}"
        elif match := re.fullmatch(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.conv", module):
            module = f"encoder.down.{match[1]}.downsample.conv"
        elif match := re.fullmatch(r"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", module):
            module = f"decoder.up.{up_levels - 1 - int(match[1])}.block.{match[2]}.{match[3]}"
        elif match := re.fullmatch(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.conv", module):
            module = f"decoder.up.{up_levels - 1 - int(match[1])}.upsample.conv"
        elif match := re.fullmatch(r"(encoder|decoder)\.mid_block\.resnets\.(\d+)\.(.+)", module):
            module = f"{match[1]}.mid.block_{int(match[2]) + 1}.{match[3]}"
        elif match := re.fullmatch(r"(encoder|decoder)\.mid_block\.attentions\.0\.(.+)", module):
            module = f"{match[1]}.mid.attn_1.{VAE_ATTENTION[match[2]]}"
            if tensor == "weight" and value.ndim == 2:
                value = value[:, :, None, None]  # 1x1 convolutions in the original, linear in diffusers
        module = module.replace("conv_shortcut", "nin_shortcut")
        out[f"{module}.{tensor}"] = value
    return out


def original_state_dict(pipeline) -> dict[str, torch.Tensor]:
    """One state dict of the whole SD 1.x pipeline in the original layout (contiguous copies)."""
    unet = unet_to_original(pipeline.unet.state_dict(), pipeline.unet.config.layers_per_block)
    vae = vae_to_original(pipeline.vae.state_dict(), len(pipeline.vae.config.up_block_types))
    # CompVis' FrozenCLIPEmbedder held a CLIPTextModel of transformers 4, whose keys begin "text_model."
    # (transformers 5 drops that level from the state dict and maps it back on loading).
    text = {
        k if k.startswith("text_model.") else f"text_model.{k}": v
        for k, v in pipeline.text_encoder.state_dict().items()
    }
    merged = {
        **{f"model.diffusion_model.{k}": v for k, v in unet.items()},
        **{f"first_stage_model.{k}": v for k, v in vae.items()},
        **{f"cond_stage_model.transformer.{k}": v for k, v in text.items()},
    }
    return {k: v.detach().contiguous().clone() for k, v in merged.items()}


def write_single_file(pipeline, path: Path) -> Path:
    """``.safetensors`` as web UIs save them, or a ``.ckpt`` pickle with the weights under ``state_dict``."""
    state = original_state_dict(pipeline)
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, str(path))
    else:
        torch.save({"state_dict": state}, path)
    return path
