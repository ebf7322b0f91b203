"""A diffusers pipeline assembled from the live training modules.

No reload from disk and no ``.to(dtype)`` of shared modules (casting the trainable UNet to fp16 breaks the
next optimizer step with "Attempting to unscale FP16 gradients"); the scheduler is a fresh instance made
from the training scheduler's config, because ``set_timesteps`` mutates the scheduler it is called on.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

SCHEDULERS = {
    "ddim": "DDIMScheduler",
    "euler": "EulerDiscreteScheduler",
    "euler_a": "EulerAncestralDiscreteScheduler",
    "dpm++": "DPMSolverMultistepScheduler",
    "pndm": "PNDMScheduler",
}
# Settings of the published SD pipelines' scheduler configs that a training scheduler's config lacks:
# SD 1.x/2.x ship PNDM with skip_prk_steps (without it, fewer than 4 steps fail and more run PRK steps).
SCHEDULER_OPTIONS: dict[str, dict[str, object]] = {"pndm": {"skip_prk_steps": True}}


REQUIRED = ("unet", "vae", "text_encoder", "tokenizer", "noise_scheduler")
UNUSED_COMPONENTS = ("safety_checker", "feature_extractor", "image_encoder")


@dataclass
class TrainingModules:
    """The modules a run trains or uses, registered once with ``on_train_start``."""

    unet: torch.nn.Module
    vae: torch.nn.Module
    text_encoder: torch.nn.Module
    tokenizer: Any
    noise_scheduler: Any
    text_encoder_2: torch.nn.Module | None = None
    tokenizer_2: Any = None
    ema_unet: Any = None  # diffusers.training_utils.EMAModel of the UNet's parameters

    @classmethod
    def from_components(cls, components: Mapping[str, Any] | None = None, **named: Any) -> TrainingModules:
        """From a diffusers pipeline's ``components`` dict (its ``scheduler`` is the noise scheduler) and
        modules given by name, which take precedence. Components no validation uses (safety checker,
        feature extractor, image encoder) are ignored; a missing module or an unknown name is an error."""
        given = {("noise_scheduler" if k == "scheduler" else k): v for k, v in (components or {}).items()}
        given.update({k: v for k, v in named.items() if v is not None})
        for unused in UNUSED_COMPONENTS:
            given.pop(unused, None)
        fields = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(given) - set(fields))
        if unknown:
            raise TypeError(f"unknown module name(s) {unknown}; expected some of {fields}")
        missing = [name for name in REQUIRED if given.get(name) is None]
        if missing:
            raise TypeError(f"missing module(s) {missing}: pass them by name or in components")
        return cls(**given)

    @property
    def is_sdxl(self) -> bool:
        return self.text_encoder_2 is not None

    def torch_modules(self) -> list[torch.nn.Module]:
        return [m for m in (self.unet, self.vae, self.text_encoder, self.text_encoder_2) if m is not None]


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


def fresh_scheduler(name: str, training_scheduler: Any) -> Any:
    """A new scheduler of the configured kind, built from the training scheduler's config."""
    import diffusers

    cls = type(training_scheduler) if name == "training" else getattr(diffusers, SCHEDULERS[name])
    return cls.from_config(training_scheduler.config, **SCHEDULER_OPTIONS.get(name, {}))


def build_pipeline(modules: TrainingModules, scheduler_name: str) -> Any:
    """SD 1.x/2.x or SDXL pipeline over the live modules (SDXL when a second text encoder is given)."""
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    scheduler = fresh_scheduler(scheduler_name, modules.noise_scheduler)
    common = {
        "vae": unwrap(modules.vae),
        "text_encoder": unwrap(modules.text_encoder),
        "tokenizer": modules.tokenizer,
        "unet": unwrap(modules.unet),
        "scheduler": scheduler,
    }
    if modules.is_sdxl:
        pipe = StableDiffusionXLPipeline(
            text_encoder_2=unwrap(modules.text_encoder_2),
            tokenizer_2=modules.tokenizer_2,
            add_watermarker=False,
            **common,
        )
    else:
        pipe = StableDiffusionPipeline(
            safety_checker=None, feature_extractor=None, requires_safety_checker=False, **common
        )
    pipe.set_progress_bar_config(disable=True)
    return pipe
