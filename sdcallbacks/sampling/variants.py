"""Which weights a validation draws from: its variants, and swapping their weights in and back out.

* ``"model"``: the weights as trained;
* ``"ema"``: the EMA weights (diffusers' ``EMAModel``) swapped into the denoiser (UNet or transformer),
  swapped back in ``finally``;
* ``"base"``: the LoRA adapters disabled (the model before training), for the baseline validation;
* ``"scale_<s>"``: the LoRA at scale ``s`` (``sampling.lora_scales``): every active adapter's peft
  ``scaling`` multiplied by ``s`` and set back to its exact former value in ``finally``, as users lower
  the LoRA weight at inference. Scale 1.0 is the ``model`` variant itself.

``sampling.ema`` picks the variants of every validation (``none``: model, ``ema``: ema, ``both``: model then
ema; the first one is the one ``monitor`` reads), followed by one ``scale_<s>`` variant per LoRA scale. The
baseline validation has one variant: ``base`` when the modules carry adapters, otherwise ``model`` (a full
fine-tune's weights at its first step).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch

from sdcallbacks.sampling.modules import TrainingModules, unwrap

Variant = str  # "model", "ema", "base" or "scale_<s>"
SCALE_PREFIX = "scale_"

EMA_VARIANTS: dict[str, tuple[Variant, ...]] = {"none": ("model",), "ema": ("ema",), "both": ("model", "ema")}


def scale_variant(scale: float) -> Variant:
    """``scale_0.8``: the variant (and ``val/scale_0.8`` the prefix) of a LoRA scale."""
    return f"{SCALE_PREFIX}{scale:g}"


def planned_variants(
    ema: str,
    baseline: bool = False,
    modules: TrainingModules | None = None,
    lora_scales: Sequence[float] = (),
) -> list[Variant]:
    """The variants of one validation, in order (see the module docstring)."""
    if baseline:
        adapted = modules is not None and any(map(has_adapters, modules.torch_modules()))
        return ["base" if adapted else "model"]
    return [*EMA_VARIANTS[ema], *(scale_variant(s) for s in lora_scales)]


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


def lora_layers(modules: TrainingModules) -> list[torch.nn.Module]:
    """Every peft LoRA layer (``scaling`` per adapter) of the modules that carry adapters."""
    return [
        layer
        for module in modules.torch_modules()
        if has_adapters(module)
        for layer in unwrap(module).modules()
        if isinstance(getattr(layer, "scaling", None), dict) and hasattr(layer, "scale_layer")
    ]


@contextlib.contextmanager
def lora_scaled(modules: TrainingModules, scale: float) -> Iterator[None]:
    """The active adapters at ``scale`` times their scaling (peft's ``scale_layer``) for the body; each
    layer's former ``scaling`` is put back as it was, not divided back (training must not drift)."""
    layers = lora_layers(modules)
    if not layers:
        raise ValueError(
            "sampling.lora_scales needs LoRA adapters (peft) on the unet, transformer or text encoder"
        )
    saved = [dict(layer.scaling) for layer in layers]
    try:
        for layer in layers:
            layer.scale_layer(scale)
        yield
    finally:
        for layer, scaling in zip(layers, saved):
            layer.scaling.clear()
            layer.scaling.update(scaling)


def variant_weights(modules: TrainingModules, variant: Variant) -> contextlib.AbstractContextManager:
    """The context in which ``modules`` hold ``variant``'s weights."""
    if variant == "base":
        return adapters_disabled(modules)
    if variant == "ema":
        return ema_weights(modules)
    if variant.startswith(SCALE_PREFIX):
        return lora_scaled(modules, float(variant[len(SCALE_PREFIX) :]))
    return contextlib.nullcontext()
