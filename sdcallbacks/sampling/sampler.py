"""Deterministic validation sampling from the live training modules.

Guarantees, each covered by a test:

* every image has its own CPU ``torch.Generator`` seeded from its :class:`~sdcallbacks.prompts.ImageJob`,
  so an image is the same for the same weights whatever the batch split or the number of processes;
* the global random streams (python, numpy, torch CPU, CUDA) are restored afterwards;
* every submodule's train/eval flag is restored exactly, and LoRA dropout is off while sampling;
* no parameter changes dtype or device; the training scheduler is not touched;
* sampling runs under ``no_grad`` and autocast that follows the accelerator's mixed precision.

``variant`` selects the weights: ``"model"`` (as trained), ``"ema"`` (EMA weights swapped in and
swapped back in ``finally``) or ``"base"`` (LoRA adapters disabled, the baseline before training).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from itertools import groupby
from typing import Literal

import torch
from PIL import Image

from sdcallbacks.prompts.library import ImageJob
from sdcallbacks.sampling.modes import eval_mode
from sdcallbacks.sampling.pipeline import TrainingModules, build_pipeline, unwrap
from sdcallbacks.sampling.rng import isolated_rng

Variant = Literal["model", "ema", "base"]


def autocast_for(device: torch.device, mixed_precision: str) -> contextlib.AbstractContextManager:
    """Autocast matching accelerate's ``mixed_precision`` ("no", "fp16", "bf16"); CPU autocast is bf16."""
    if mixed_precision not in ("fp16", "bf16"):
        return contextlib.nullcontext()
    dtype = torch.float16 if mixed_precision == "fp16" and device.type == "cuda" else torch.bfloat16
    return torch.autocast(device_type=device.type, dtype=dtype)


def _has_adapters(module: torch.nn.Module | None) -> bool:
    return module is not None and bool(getattr(unwrap(module), "peft_config", None))


@contextlib.contextmanager
def adapters_disabled(modules: TrainingModules) -> Iterator[None]:
    """Disable peft adapters on every module that has them (LoRA scale 0); re-enable in ``finally``."""
    touched = [unwrap(m) for m in modules.torch_modules() if _has_adapters(m)]
    if not touched:
        raise ValueError("the base-model baseline needs LoRA adapters on the unet or text encoder (peft)")
    # peft's enable_adapters() makes every adapter weight trainable again: keep each flag as it was, so a
    # LoRA layer the user froze stays out of the optimizer and gradient clipping.
    trainable = {param: param.requires_grad for module in touched for param in module.parameters()}
    try:
        for module in touched:
            module.disable_adapters()
        yield
    finally:
        for module in touched:
            module.enable_adapters()
        for param, requires_grad in trainable.items():
            param.requires_grad_(requires_grad)


@contextlib.contextmanager
def ema_weights(modules: TrainingModules) -> Iterator[None]:
    """Swap the EMA weights into the UNet for the body (``store``/``copy_to``/``restore``)."""
    if modules.ema_unet is None:
        raise ValueError("sampling.ema is 'ema' or 'both' but no ema_unet was passed to on_train_start")
    params = list(unwrap(modules.unet).parameters())
    modules.ema_unet.store(params)
    try:
        modules.ema_unet.copy_to(params)
        yield
    finally:
        modules.ema_unet.restore(params)


def _settings(job: ImageJob) -> tuple[int, int, int, float]:
    p = job.prompt
    return (p.width, p.height, p.steps, p.guidance_scale)


class ValidationSampler:
    """Draws the images of a list of jobs from the live modules."""

    def __init__(
        self,
        modules: TrainingModules,
        *,
        scheduler: str = "ddim",
        batch_size: int = 4,
        device: torch.device | str | None = None,
        mixed_precision: str = "no",
    ):
        self.modules = modules
        self.scheduler = scheduler
        self.batch_size = batch_size
        self.device = (
            torch.device(device) if device is not None else next(unwrap(modules.unet).parameters()).device
        )
        self.mixed_precision = mixed_precision

    def variant_weights(self, variant: Variant) -> contextlib.AbstractContextManager:
        if variant == "base":
            return adapters_disabled(self.modules)
        if variant == "ema":
            return ema_weights(self.modules)
        return contextlib.nullcontext()

    def sample(self, jobs: Sequence[ImageJob], variant: Variant = "model") -> list[Image.Image]:
        """One PIL image per job, in the order of ``jobs``."""
        if not jobs:
            return []
        cuda_devices = [self.device.index or 0] if self.device.type == "cuda" else []
        images: list[Image.Image] = []
        with (
            isolated_rng(cuda_devices),
            eval_mode(*self.modules.torch_modules()),
            self.variant_weights(variant),
            torch.no_grad(),
            autocast_for(self.device, self.mixed_precision),
        ):
            pipe = build_pipeline(self.modules, self.scheduler)
            try:
                # Consecutive jobs with equal settings share a pipeline call; batch size never changes a
                # pixel because each image has its own generator.
                for (width, height, steps, cfg), group in groupby(jobs, key=_settings):
                    group = list(group)
                    for start in range(0, len(group), self.batch_size):
                        chunk = group[start : start + self.batch_size]
                        images.extend(self._call(pipe, chunk, width, height, steps, cfg))
            finally:
                del pipe
        return images

    def _call(self, pipe, chunk: list[ImageJob], width: int, height: int, steps: int, cfg: float):
        generators = [torch.Generator("cpu").manual_seed(job.seed) for job in chunk]
        negative = [job.prompt.negative_prompt for job in chunk]
        out = pipe(
            prompt=[job.prompt.prompt for job in chunk],
            negative_prompt=negative if cfg > 1.0 and any(negative) else None,
            width=width,
            height=height,
            num_inference_steps=steps,
            guidance_scale=cfg,
            generator=generators,
            output_type="pil",
        )
        return [im.convert("RGB") for im in out.images]
