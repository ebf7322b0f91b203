"""ImageReward's BLIP (``THUDM/ImageReward``: ``ImageReward.pt`` + ``med_config.json``) on transformers' BLIP
modules, with the reward head.

The ``image-reward`` package pins timm 0.6.13, transformers 4.27.4 and fairscale, so its checkpoint is
loaded here onto modules of today's transformers, key for key:

* ``blip.visual_encoder.*``, BLIP's timm-style ViT (``cls_token``, ``pos_embed``, ``blocks.N.attn.qkv``,
  LayerNorm eps 1e-6, exact GELU), onto ``BlipVisionModel`` (same fused qkv; ``norm`` is its
  ``post_layernorm``). Width, depth, patch and input size are read from the tensors; heads are 64 wide, as
  in both of BLIP's ViTs (base 768/12, large 1024/16).
* ``blip.text_encoder.*``, BLIP's ``med.py`` BERT (no token types, cross-attention to the image in every
  layer, no pooler), onto ``BlipTextModel`` built from ``med_config.json`` (the port of ``med.py``; its
  module names are the same). ``position_ids`` is a buffer there, not a weight.
* ``mlp.layers.{0,2,4,6,7}``: five linear layers, 768 -> 1024 -> 128 -> 64 -> 16 -> 1, with no activation
  between them (the package comments its ReLUs out; its dropouts are off in eval).

As ``ImageReward.score`` computes it: the image through ``Resize(n, bicubic)``, ``CenterCrop(n)``, RGB,
OpenAI mean/std (``n`` = 224 for the published ViT-L/16); the prompt through ``bert-base-uncased`` with
BLIP's two added tokens, padded and truncated to 35 tokens; the text encoder's first-token state, attending
to every image token, through the head; ``(reward - 0.16717362830052426) / 1.0333394966054072``.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image

from sdcallbacks.metrics.backbones.base import Backbone
from sdcallbacks.metrics.images import drop_alpha
from sdcallbacks.weights import WeightsFormatError, from_pretrained, load_state_dict_file, resolve_file

CHECKPOINT = "ImageReward.pt"
TEXT_CONFIG = "med_config.json"
MAX_TOKENS = 35
REWARD_MEAN = 0.16717362830052426
REWARD_STD = 1.0333394966054072
HEAD_WIDTH = 64

VISION, TEXT, HEAD = "blip.visual_encoder.", "blip.text_encoder.", "mlp.layers."
# BLIP's timm-style ViT names -> BlipVisionModel's, by regular expression on the key after VISION.
_VISION_KEYS = [
    (r"^cls_token$", "embeddings.class_embedding"),
    (r"^pos_embed$", "embeddings.position_embedding"),
    (r"^patch_embed\.proj\.", "embeddings.patch_embedding."),
    (r"^blocks\.(\d+)\.norm1\.", r"encoder.layers.\1.layer_norm1."),
    (r"^blocks\.(\d+)\.norm2\.", r"encoder.layers.\1.layer_norm2."),
    (r"^blocks\.(\d+)\.attn\.qkv\.", r"encoder.layers.\1.self_attn.qkv."),
    (r"^blocks\.(\d+)\.attn\.proj\.", r"encoder.layers.\1.self_attn.projection."),
    (r"^blocks\.(\d+)\.mlp\.", r"encoder.layers.\1.mlp."),
    (r"^norm\.", "post_layernorm."),
]


def vision_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The ``blip.visual_encoder.*`` tensors under ``BlipVisionModel``'s names (unknown names kept, so that
    a strict load names them)."""
    mapped = {}
    for key, tensor in state.items():
        if not key.startswith(VISION):
            continue
        name = key[len(VISION) :]
        for pattern, replacement in _VISION_KEYS:
            if re.search(pattern, name):
                name = re.sub(pattern, replacement, name)
                break
        mapped[name] = tensor
    return mapped


def _section(state: dict[str, torch.Tensor], prefix: str, skip: tuple[str, ...] = ()) -> dict:
    return {
        k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix) and k[len(prefix) :] not in skip
    }


def _load_strict(module: torch.nn.Module, state: dict, path: Path, prefix: str) -> None:
    result = module.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise WeightsFormatError(
            f"{path}: not ImageReward's layout under {prefix!r}: missing "
            f"{sorted(result.missing_keys)[:5]}, unexpected {sorted(result.unexpected_keys)[:5]}"
        )


def reward_head(state: dict[str, torch.Tensor], path: Path) -> torch.nn.Sequential:
    """``mlp.layers.*`` as the package's head: its linear layers in index order, nothing between them."""
    head_state = _section(state, HEAD)
    indices = sorted({int(k.split(".")[0]) for k in head_state})
    if not indices:
        raise WeightsFormatError(f"{path}: no reward head (keys {HEAD}*)")
    layers = []
    for index in indices:
        out_features, in_features = head_state[f"{index}.weight"].shape
        layer = torch.nn.Linear(in_features, out_features)
        _load_strict(layer, {n: head_state[f"{index}.{n}"] for n in ("weight", "bias")}, path, HEAD)
        layers.append(layer)
    return torch.nn.Sequential(*layers)


def vision_config(state: dict[str, torch.Tensor], path: Path):
    """``BlipVisionConfig`` of the checkpoint's ViT, read from its tensors."""
    from transformers import BlipVisionConfig

    try:
        width = state[f"{VISION}cls_token"].shape[-1]
        patch = state[f"{VISION}patch_embed.proj.weight"].shape[-1]
        positions = state[f"{VISION}pos_embed"].shape[1]
        intermediate = state[f"{VISION}blocks.0.mlp.fc1.weight"].shape[0]
    except KeyError as err:
        raise WeightsFormatError(f"{path}: no {err.args[0]}; not ImageReward's BLIP checkpoint") from None
    depth = len({k.split(".")[3] for k in state if k.startswith(f"{VISION}blocks.")})
    grid = math.isqrt(positions - 1)
    return BlipVisionConfig(
        hidden_size=width,
        intermediate_size=intermediate,
        num_hidden_layers=depth,
        num_attention_heads=max(1, width // HEAD_WIDTH),
        patch_size=patch,
        image_size=grid * patch,
        layer_norm_eps=1e-6,
        hidden_act="gelu",
    )


def text_config(med_config: Path, encoder_width: int):
    """``BlipTextConfig`` from BLIP's ``med_config.json``; the cross-attention reads ``encoder_width``
    (the ViT's width, as ``BLIP_Pretrain`` sets it)."""
    from transformers import BlipTextConfig

    try:
        med = json.loads(med_config.read_text(encoding="utf-8"))
        fields = {
            name: med[name]
            for name in (
                "vocab_size",
                "hidden_size",
                "intermediate_size",
                "num_hidden_layers",
                "num_attention_heads",
                "max_position_embeddings",
            )
        }
    except (OSError, ValueError, KeyError) as err:
        raise WeightsFormatError(f"{med_config}: not a BLIP med config ({err!r})") from None
    return BlipTextConfig(
        **fields,
        hidden_act=med.get("hidden_act", "gelu"),
        layer_norm_eps=med.get("layer_norm_eps", 1e-12),
        pad_token_id=med.get("pad_token_id", 0),
        encoder_hidden_size=encoder_width,
        is_decoder=True,  # builds the cross-attention; each call passes is_decoder=False (no causal mask)
    )


def load_blip_tokenizer(source: str):
    """``bert-base-uncased``'s tokenizer with the two tokens BLIP adds (``[DEC]``, ``[ENC]``), as
    ``init_tokenizer`` does."""
    from transformers import BertTokenizer

    tokenizer = from_pretrained(BertTokenizer, source, "vocab.txt")
    tokenizer.add_special_tokens({"bos_token": "[DEC]"})
    tokenizer.add_special_tokens({"additional_special_tokens": ["[ENC]"]})
    return tokenizer


class ImageRewardBackbone(Backbone):
    """Image features are the ViT's token states (N, tokens, width); :meth:`rewards` runs the text encoder
    and the head on them with each image's prompt."""

    def __init__(self, source: str, tokenizer: str, device: str = "cpu", batch_size: int = 16):
        super().__init__(device, batch_size)
        self.source = source
        self.tokenizer_source = tokenizer

    @property
    def key(self) -> str:
        return f"image_reward:{self.source}:{self.tokenizer_source}"

    def load(self) -> None:
        from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
        from torchvision import transforms
        from transformers import BlipTextModel, BlipVisionModel

        path = resolve_file(self.source, CHECKPOINT)
        med_config = resolve_file(self.source, TEXT_CONFIG)
        state = load_state_dict_file(path)
        config = vision_config(state, path)
        self.vision = BlipVisionModel(config)
        _load_strict(self.vision, vision_state_dict(state), path, VISION)
        self.text_encoder = BlipTextModel(
            text_config(med_config, config.hidden_size), add_pooling_layer=False
        )
        _load_strict(self.text_encoder, _section(state, TEXT, skip=("embeddings.position_ids",)), path, TEXT)
        self.head = reward_head(state, path)
        for module in self._modules():
            module.eval().to(self.device)
        self.tokenizer = load_blip_tokenizer(self.tokenizer_source)
        side = config.image_size
        self.transform = transforms.Compose(
            [
                transforms.Resize(side, interpolation=transforms.InterpolationMode.BICUBIC),
                transforms.CenterCrop(side),
                transforms.ToTensor(),
                transforms.Normalize(OPENAI_DATASET_MEAN, OPENAI_DATASET_STD),
            ]
        )

    def forward(self, images: Sequence[Image.Image]) -> torch.Tensor:
        pixels = torch.stack([self.transform(drop_alpha(im)) for im in images]).to(self.device)
        return self.vision(pixel_values=pixels).last_hidden_state.float().cpu()

    @torch.inference_mode()
    def rewards(self, image_states: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        """(N,) normalised rewards of image ``i`` (its :meth:`embed` row) for ``prompts[i]``."""
        self.ensure_loaded()
        parts = []
        for start in range(0, len(prompts), self.batch_size):
            states = image_states[start : start + self.batch_size].to(self.device)
            tokens = self.tokenizer(
                list(prompts[start : start + self.batch_size]),
                padding="max_length",
                truncation=True,
                max_length=MAX_TOKENS,
                return_tensors="pt",
            )
            text = self.text_encoder(
                input_ids=tokens.input_ids.to(self.device),
                attention_mask=tokens.attention_mask.to(self.device),
                encoder_hidden_states=states,
                encoder_attention_mask=torch.ones(states.shape[:-1], dtype=torch.long, device=self.device),
                is_decoder=False,
            )
            parts.append(self.head(text.last_hidden_state[:, 0].float()).squeeze(1).cpu())
        return (torch.cat(parts) - REWARD_MEAN) / REWARD_STD
