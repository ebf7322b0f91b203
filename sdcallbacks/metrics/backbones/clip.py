"""CLIP through open_clip: image embeddings (shared by clip_score, clip_i, aesthetic_laion, diversity_clip,
kid) and prompt embeddings.

OpenAI weights were trained with QuickGELU; open_clip's plain ``ViT-L-14`` config uses GELU and only warns
when given them (REFERENCE §1.7), so ``pretrained: openai`` always forces QuickGELU. Images go through
open_clip's own eval transform for the model (bicubic resize of the short side, centre crop, OpenAI
mean/std), the preprocessing the LAION aesthetic predictor was trained on. Prompts longer than the
context are truncated keeping the end-of-text token last (as OpenAI's ``clip.tokenize(truncate=True)``),
with a warning naming the prompt. Embeddings are returned unnormalised, float32, on the CPU.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image

from sdcallbacks.config.loading import LOCAL_DIR, WEIGHT_SUFFIXES
from sdcallbacks.config.metrics import ClipModelConfig
from sdcallbacks.metrics.backbones.base import Backbone, TextEmbeddings
from sdcallbacks.metrics.images import drop_alpha
from sdcallbacks.weights import WeightsNotFoundError

logger = logging.getLogger("sdcallbacks")

LOCAL_WEIGHTS = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")


def check_local_clip(config: ClipModelConfig) -> None:
    """open_clip only warns and keeps random weights when a local-dir folder has no weights file."""
    if config.model.startswith(LOCAL_DIR):
        folder = Path(config.model[len(LOCAL_DIR) :]).expanduser()
        missing = [n for n in ("open_clip_config.json",) if not (folder / n).is_file()]
        if not any((folder / n).is_file() for n in LOCAL_WEIGHTS):
            missing.append(" or ".join(LOCAL_WEIGHTS))
        if missing:
            raise WeightsNotFoundError(
                missing[0],
                config.model,
                f"{folder} has no {' and no '.join(missing)}",
                looked_in=str(folder),
                fix="point clip.model at a folder with open_clip_config.json and the model weights",
            )
    elif config.model.endswith(".json") and not Path(config.model).expanduser().is_file():
        raise WeightsNotFoundError(
            Path(config.model).name,
            config.model,
            f"{config.model} does not exist",
            looked_in=config.model,
            fix="point the model at an open_clip model config JSON file, or use a model name",
        )
    elif config.pretrained and Path(config.pretrained).suffix in WEIGHT_SUFFIXES:
        path = Path(config.pretrained).expanduser()
        if not path.is_file():
            raise WeightsNotFoundError(
                path.name,
                config.pretrained,
                f"{path} does not exist",
                looked_in=str(path),
                fix="point clip.pretrained at an existing weights file, or use a pretrained tag",
            )


def letterbox(image_size: int | Sequence[int]):
    """HPS v2's evaluation transform (``hpsv2.score``: its open_clip fork's ``image_transform`` with
    ``resize_longest_max=True``): the image as a tensor, its longer side resized to the model's input size
    (bicubic, on the tensor), zero-padded to a centred square, then normalised. Where HPS's own transform
    leaves a non-square image whose long side is already the input size unpadded (and its model then
    fails), it is padded here. Mean and std are OpenAI's, as HPS passes none."""
    from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
    from torchvision.transforms import functional as F

    side = image_size if isinstance(image_size, int) else int(image_size[0])

    def transform(image: Image.Image) -> torch.Tensor:
        tensor = F.to_tensor(image)
        height, width = tensor.shape[1:]
        scale = side / float(max(height, width))
        if scale != 1.0:
            height, width = round(height * scale), round(width * scale)
            tensor = F.resize(tensor, [height, width], F.InterpolationMode.BICUBIC)
        pad_h, pad_w = side - height, side - width
        tensor = F.pad(tensor, [pad_w // 2, pad_h // 2, pad_w - pad_w // 2, pad_h - pad_h // 2], fill=0)
        return F.normalize(tensor, list(OPENAI_DATASET_MEAN), list(OPENAI_DATASET_STD))

    return transform


class ClipBackbone(Backbone):
    """``letterbox``: images take :func:`letterbox` (HPS v2's transform) instead of open_clip's eval
    transform (a different feature set: the key says so)."""

    def __init__(
        self, config: ClipModelConfig, device: str = "cpu", batch_size: int = 16, letterbox: bool = False
    ):
        super().__init__(device, batch_size)
        self.config = config
        self.letterbox = letterbox
        self._texts = TextEmbeddings(self._encode_texts, batch_size)
        self.truncated_prompts = 0

    @property
    def key(self) -> str:
        return f"open_clip:{self.config.key}" + (":letterbox" if self.letterbox else "")

    @property
    def pretrained(self) -> str | None:
        return None if self.config.model.startswith((LOCAL_DIR, "hf-hub:")) else self.config.pretrained

    @property
    def model_name(self) -> str:
        """open_clip's name for the model; a model config JSON file is registered under its stem."""
        model = self.config.model
        if model.endswith(".json") and not model.startswith((LOCAL_DIR, "hf-hub:")):
            import open_clip

            path = Path(model).expanduser()
            open_clip.add_model_config(path)
            return path.stem
        return model

    def load(self) -> None:
        import open_clip

        check_local_clip(self.config)
        name = self.model_name
        quick_gelu = self.pretrained == "openai" and "quickgelu" not in name.lower()
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(
                name, pretrained=self.pretrained, force_quick_gelu=quick_gelu, device=self.device
            )
        except (OSError, RuntimeError) as err:
            raise WeightsNotFoundError(
                self.config.pretrained or self.config.model,
                self.config.model,
                f"open_clip could not load it ({type(err).__name__}: {err})",
                looked_in="open_clip's pretrained registry and the Hugging Face hub cache",
                fix="run once with network access to fill the hub cache, or set clip.model to "
                "'local-dir:/path' / clip.pretrained to a local weights file",
            ) from err
        self.model = model.eval()
        self.preprocess = preprocess
        if self.letterbox:
            self.preprocess = letterbox(model.visual.image_size)
        self.tokenizer = open_clip.get_tokenizer(name)
        self.context_length = getattr(self.tokenizer, "context_length", 77)
        self.embed_dim = int(model.visual.output_dim)

    def forward(self, images: Sequence[Image.Image]) -> torch.Tensor:
        batch = torch.stack([self.preprocess(drop_alpha(im)) for im in images]).to(self.device)
        return self.model.encode_image(batch).float().cpu()

    def _warn_if_truncated(self, prompt: str) -> None:
        encode = getattr(self.tokenizer, "encode", None)
        if encode is None:
            return
        n_tokens = len(encode(prompt)) + 2  # start and end tokens
        if n_tokens > self.context_length:
            self.truncated_prompts += 1
            logger.warning(
                "sdcallbacks: prompt has %d CLIP tokens, over the %d-token context; the rest is cut "
                "(end token kept), so CLIP only sees its start: %r",
                n_tokens,
                self.context_length,
                prompt[:120],
            )

    def embed_texts(self, prompts: Sequence[str]) -> torch.Tensor:
        """(N, D) unnormalised text embeddings; each distinct prompt is encoded once per run."""
        self.ensure_loaded()
        return self._texts(prompts)

    def _encode_texts(self, prompts: list[str]) -> torch.Tensor:
        for prompt in prompts:
            self._warn_if_truncated(prompt)
        return self.model.encode_text(self.tokenizer(prompts).to(self.device))


def normalized(features: torch.Tensor) -> torch.Tensor:
    """Rows scaled to unit L2 norm; a zero row stays zero (norm taken as 1, as the LAION predictor does)."""
    norm = features.norm(dim=-1, keepdim=True)
    return features / torch.where(norm == 0, torch.ones_like(norm), norm)
