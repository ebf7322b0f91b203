"""Model families: which diffusers pipeline draws a set of live modules, told from the modules themselves.

* ``sd``: SD 1.x/2.x, ``StableDiffusionPipeline``: a UNet conditioned on one CLIP text encoder;
* ``sdxl``: ``StableDiffusionXLPipeline``: a UNet with ``addition_embed_type="text_time"`` (pooled text and
  size conditioning) and two text encoders (``text_encoder_2``/``tokenizer_2``).

``sampling.family: auto`` (the default) detects the family; naming one checks that the modules are of it.
Modules of two families mixed, or a module of a family not supported yet (a Flux or SD3 ``transformer``
given as ``unet``), are an error naming what was given and what the family needs, at ``on_train_start``.
"""

from __future__ import annotations

from typing import Any

from sdcallbacks.sampling.pipeline import unwrap

FAMILIES = ("sd", "sdxl")


class ModulesError(TypeError):
    """The modules given to ``on_train_start`` cannot be validated as one model."""


def resolve_family(modules: Any, requested: str = "auto") -> str:
    """The family of ``modules`` (``requested`` when it is one of :data:`FAMILIES`, after checking that the
    modules are of it); raises :class:`ModulesError` otherwise."""
    unet = unwrap(modules.unet)
    kind = type(unet).__name__
    if "Transformer" in kind:
        raise ModulesError(
            f"unet is a {kind}: a transformer-based model (SD3, Flux) is not supported yet; "
            f"supported families: {', '.join(FAMILIES)} (a UNet2DConditionModel)"
        )
    text_time = getattr(getattr(unet, "config", None), "addition_embed_type", None) == "text_time"
    second = modules.text_encoder_2 is not None or modules.tokenizer_2 is not None
    if text_time and not (modules.text_encoder_2 is not None and modules.tokenizer_2 is not None):
        raise ModulesError(
            "the unet is an SDXL UNet (addition_embed_type='text_time'): pass text_encoder_2 and tokenizer_2 "
            "too (StableDiffusionXLPipeline's components)"
        )
    if second and not text_time:
        raise ModulesError(
            "text_encoder_2/tokenizer_2 were given (SDXL) but the unet has no SDXL conditioning "
            f"(addition_embed_type={getattr(unet.config, 'addition_embed_type', None)!r}): modules of two "
            "families mixed"
        )
    detected = "sdxl" if text_time else "sd"
    if requested not in ("auto", detected):
        raise ModulesError(f"sampling.family is {requested!r} but the modules are {detected!r}")
    return detected
