"""Which weights a validation draws from: its variants, and swapping their weights in and back out.

* ``"model"``: the weights as trained;
* ``"ema"``: the EMA weights (diffusers' ``EMAModel``) swapped into the denoiser (UNet or transformer),
  swapped back in ``finally``;
* ``"base"``: the LoRA adapters disabled (the model before training), for the baseline validation.

``sampling.ema`` picks the variants of every validation (``none``: model, ``ema``: ema, ``both``: model then
ema; the first one is the one ``monitor`` reads). The baseline validation has one variant: ``base`` when
the modules carry adapters, otherwise ``model`` (a full fine-tune's weights at its first step).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Literal

import torch

from sdcallbacks.sampling.modules import TrainingModules, unwrap

Variant = Literal["model", "ema", "base"]

EMA_VARIANTS: dict[str, tuple[Variant, ...]] = {"none": ("model",), "ema": ("ema",), "both": ("model", "ema")}


def planned_variants(
    ema: str, baseline: bool = False, modules: TrainingModules | None = None
) -> list[Variant]:
    """The variants of one validation, in order (see the module docstring)."""
    if baseline:
        adapted = modules is not None and any(map(has_adapters, modules.torch_modules()))
        return ["base" if adapted else "model"]
    return list(EMA_VARIANTS[ema])


def has_adapters(module: torch.nn.Module | None) -> bool:
    return module is not None and bool(getattr(unwrap(module), "peft_config", None))


@contextlib.contextmanager
def adapters_disabled(modules: TrainingModules) -> Iterator[None]:
    """Disable peft adapters on every module that has them (LoRA scale 0); re-enable in ``finally``."""
    touched = [unwrap(m) for m in modules.torch_modules() if has_adapters(m)]
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
    """Swap the EMA weights into the denoiser for the body (``store``/``copy_to``/``restore``)."""
    if modules.ema is None:
        raise ValueError(
            "sampling.ema is 'ema' or 'both' but no ema_unet (or ema_transformer) was given to on_train_start"
        )
    params = list(unwrap(modules.denoiser).parameters())
    modules.ema.store(params)
    try:
        modules.ema.copy_to(params)
        yield
    finally:
        modules.ema.restore(params)


def variant_weights(modules: TrainingModules, variant: Variant) -> contextlib.AbstractContextManager:
    """The context in which ``modules`` hold ``variant``'s weights."""
    if variant == "base":
        return adapters_disabled(modules)
    if variant == "ema":
        return ema_weights(modules)
    return contextlib.nullcontext()
