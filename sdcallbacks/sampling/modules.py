"""The live modules of the model being trained, as handed to ``on_train_start``.

Names are diffusers' pipeline component names (``unet`` or ``transformer``, ``text_encoder``..``_3``,
``tokenizer``..``_3``, ``vae``; the pipeline's ``scheduler`` is the ``noise_scheduler`` training uses), so
a pipeline's ``components`` dict is taken as it is. Which family they make is
:func:`sdcallbacks.sampling.families.resolve_family`'s question.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

REQUIRED = ("vae", "noise_scheduler")  # text encoders: per family (resolve_family), or loaded (encoders.py)
UNUSED_COMPONENTS = ("safety_checker", "feature_extractor", "image_encoder")
# EMA of the denoiser under the names training scripts give it.
EMA_NAMES = ("ema_unet", "ema_transformer")


@dataclass(kw_only=True)
class TrainingModules:
    """The modules a run trains or uses, registered once with ``on_train_start``. Exactly one of ``unet``
    (SD 1.x/2.x, SDXL) and ``transformer`` (SD3, Flux) is the denoiser."""

    vae: torch.nn.Module
    noise_scheduler: Any
    text_encoder: torch.nn.Module | None = None
    tokenizer: Any = None
    unet: torch.nn.Module | None = None
    transformer: torch.nn.Module | None = None
    text_encoder_2: torch.nn.Module | None = None
    tokenizer_2: Any = None
    text_encoder_3: torch.nn.Module | None = None
    tokenizer_3: Any = None
    ema: Any = None  # diffusers.training_utils.EMAModel of the denoiser's parameters
    # Text encoders the callback loaded itself (sdcallbacks.sampling.encoders), kept on the CPU.
    loaded_encoders: tuple[str, ...] = dataclasses.field(default=(), repr=False)

    def __post_init__(self) -> None:
        if (self.unet is None) == (self.transformer is None):
            given = "both" if self.unet is not None else "neither"
            raise TypeError(f"pass the denoiser as unet (SD, SDXL) or transformer (SD3, Flux); {given} given")

    @classmethod
    def from_components(cls, components: Mapping[str, Any] | None = None, **named: Any) -> TrainingModules:
        """From a diffusers pipeline's ``components`` dict (its ``scheduler`` is the noise scheduler) and
        modules given by name, which take precedence. Components no validation uses (safety checker,
        feature extractor, image encoder) are ignored; a missing module or an unknown name is an error.
        ``ema_unet`` and ``ema_transformer`` are names of ``ema``."""
        given = {("noise_scheduler" if k == "scheduler" else k): v for k, v in (components or {}).items()}
        given.update({k: v for k, v in named.items() if v is not None})
        for unused in UNUSED_COMPONENTS:
            given.pop(unused, None)
        for name in EMA_NAMES:
            if name in given:
                given["ema"] = given.pop(name)
        fields = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(given) - set(fields))
        if unknown:
            raise TypeError(f"unknown module name(s) {unknown}; expected some of {fields}")
        missing = [name for name in REQUIRED if given.get(name) is None]
        if missing:
            raise TypeError(f"missing module(s) {missing}: pass them by name or in components")
        return cls(**given)

    @property
    def denoiser(self) -> torch.nn.Module:
        """The UNet or the transformer."""
        return self.unet if self.unet is not None else self.transformer

    def torch_modules(self) -> list[torch.nn.Module]:
        candidates = (self.denoiser, self.vae, self.text_encoder, self.text_encoder_2, self.text_encoder_3)
        return [m for m in candidates if m is not None]


def unwrap(module: Any) -> Any:
    """Strip DDP/accelerate wrappers (``.module``) and ``torch.compile`` (``._orig_mod``)."""
    while True:
        if hasattr(module, "_orig_mod"):
            module = module._orig_mod
        elif isinstance(module, torch.nn.parallel.DistributedDataParallel) or (
            type(module).__name__ in ("DistributedDataParallel", "DataParallel") and hasattr(module, "module")
        ):
            module = module.module
        else:
            return module
