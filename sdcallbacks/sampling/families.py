"""Model families: which diffusers pipeline draws a set of live modules, told from the modules themselves.

==========  ===============================  ============  ===========================================
family      pipeline                         denoiser      text encoders (tokenizers alike)
==========  ===============================  ============  ===========================================
``sd``      ``StableDiffusionPipeline``      ``unet``      ``text_encoder`` (CLIP)
``sdxl``    ``StableDiffusionXLPipeline``    ``unet``      ``text_encoder``, ``text_encoder_2`` (CLIP)
``sd3``     ``StableDiffusion3Pipeline``     ``transformer``  two CLIP, ``text_encoder_3`` (T5, optional)
``flux``    ``FluxPipeline``                 ``transformer``  ``text_encoder`` (CLIP), ``text_encoder_2`` (T5)
==========  ===============================  ============  ===========================================

SDXL is a UNet with ``addition_embed_type="text_time"``; SD3 and Flux are told by their transformer's
class. ``sampling.family: auto`` (the default) detects the family; naming one checks that the modules are
of it. Modules of two families mixed (a CLIP encoder where Flux reads T5, a second text encoder beside an
SD 1.x UNet), a transformer given as ``unet`` or a module the family needs left out are an error naming
what was given and what the family needs, at ``on_train_start``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sdcallbacks.sampling.modules import TrainingModules, unwrap


class ModulesError(TypeError):
    """The modules given to ``on_train_start`` cannot be validated as one model."""


@dataclass(frozen=True)
class Family:
    """What a family's pipeline takes and how its weights are saved."""

    name: str
    pipeline: str  # the diffusers pipeline class that draws it
    denoiser: str  # "unet" or "transformer"
    encoders: tuple[str, ...]  # text encoders the pipeline needs, each with its tokenizer
    optional_encoders: tuple[str, ...] = ()  # ones it draws without (SD3's T5: zeros in its place)
    t5: str | None = None  # the T5 encoder's attribute
    flow_matching: bool = False  # trained to predict noise - x0 along sigma, not DDPM's epsilon
    # Tokens of T5 the pipeline reads by default (its max_sequence_length).
    max_sequence_length: int | None = None

    @property
    def lora_modules(self) -> tuple[str, ...]:
        """The modules whose LoRA layers the pipeline's ``save_lora_weights`` takes (no T5: diffusers'
        loaders have no T5 LoRA)."""
        return tuple(m for m in (self.denoiser, *self.encoders) if m != self.t5)

    def patch(self, modules: TrainingModules) -> int:
        """Latent pixels per token side: SD3's ``patch_size``, Flux's 2x2 packing, 1 for a UNet."""
        if self.name == "sd3":
            return int(unwrap(modules.transformer).config.patch_size)
        return 2 if self.name == "flux" else 1

    def size_factor(self, modules: TrainingModules) -> int:
        """Image sides must be a multiple of this: the VAE's downscale times :meth:`patch`."""
        vae = unwrap(modules.vae)
        return 2 ** (len(vae.config.block_out_channels) - 1) * self.patch(modules)


def tokenizer_of(encoder: str) -> str:
    return encoder.replace("text_encoder", "tokenizer")


FAMILIES: dict[str, Family] = {
    "sd": Family("sd", "StableDiffusionPipeline", "unet", ("text_encoder",)),
    "sdxl": Family("sdxl", "StableDiffusionXLPipeline", "unet", ("text_encoder", "text_encoder_2")),
    "sd3": Family(
        "sd3",
        "StableDiffusion3Pipeline",
        "transformer",
        ("text_encoder", "text_encoder_2"),
        optional_encoders=("text_encoder_3",),
        t5="text_encoder_3",
        flow_matching=True,
        max_sequence_length=256,
    ),
    "flux": Family(
        "flux",
        "FluxPipeline",
        "transformer",
        ("text_encoder", "text_encoder_2"),
        t5="text_encoder_2",
        flow_matching=True,
        max_sequence_length=512,
    ),
}
TRANSFORMERS = {"SD3Transformer2DModel": "sd3", "FluxTransformer2DModel": "flux"}
ENCODERS = ("text_encoder", "text_encoder_2", "text_encoder_3")


def detect_family(modules: TrainingModules) -> str:
    """The family name told from the denoiser alone (the text encoders are checked by
    :func:`resolve_family`)."""
    if modules.unet is not None:
        kind = type(unwrap(modules.unet)).__name__
        if kind in TRANSFORMERS:
            raise ModulesError(
                f"unet is a {kind}: a {TRANSFORMERS[kind]} model's denoiser is passed as transformer=, "
                "the name its diffusers pipeline gives it"
            )
        text_time = getattr(unwrap(modules.unet).config, "addition_embed_type", None) == "text_time"
        return "sdxl" if text_time else "sd"
    kind = type(unwrap(modules.transformer)).__name__
    if kind not in TRANSFORMERS:
        raise ModulesError(
            f"transformer is a {kind}; supported transformers: {', '.join(TRANSFORMERS)} (families sd3, flux)"
        )
    return TRANSFORMERS[kind]


def _model_type(module: Any) -> str:
    return str(getattr(getattr(unwrap(module), "config", None), "model_type", ""))


def resolve_family(modules: TrainingModules, requested: str = "auto") -> Family:
    """The family of ``modules``, after checking that they are all of it (and of ``requested``, unless
    ``auto``); raises :class:`ModulesError` naming the problem otherwise."""
    family = FAMILIES[detect_family(modules)]
    allowed = family.encoders + family.optional_encoders
    for encoder in ENCODERS:
        module, tokenizer = getattr(modules, encoder), getattr(modules, tokenizer_of(encoder))
        if encoder not in allowed and (module is not None or tokenizer is not None):
            raise ModulesError(
                f"{encoder}/{tokenizer_of(encoder)} were given but the {family.denoiser} is "
                f"{family.name!r}, which has no {encoder}: modules of two families mixed"
            )
        if encoder in allowed and (module is None) != (tokenizer is None):
            raise ModulesError(f"pass {encoder} and {tokenizer_of(encoder)} together; one of them is None")
        if encoder in family.encoders and module is None:
            needed = " and ".join(f"{e}/{tokenizer_of(e)}" for e in family.encoders)
            raise ModulesError(
                f"the {family.denoiser} is {family.name!r} ({family.pipeline}): pass {encoder} and "
                f"{tokenizer_of(encoder)} too; it needs {needed} (or set sampling.text_encoders_from to "
                "load them from the base model)"
            )
        if module is not None:
            vocabulary = getattr(unwrap(module).config, "vocab_size", None)
            if vocabulary is not None and len(tokenizer) > vocabulary:
                raise ModulesError(
                    f"{tokenizer_of(encoder)} has {len(tokenizer)} tokens but {encoder} embeds {vocabulary}: "
                    "a tokenizer of another model"
                )
            wants_t5 = encoder == family.t5
            is_t5 = _model_type(module) in ("t5", "umt5")
            if wants_t5 != is_t5:
                raise ModulesError(
                    f"{encoder} is a {type(unwrap(module)).__name__} but {family.name!r} reads "
                    f"{'a T5 encoder' if wants_t5 else 'a CLIP text encoder'} there: modules of two families "
                    "mixed"
                )
    if requested not in ("auto", family.name):
        raise ModulesError(f"sampling.family is {requested!r} but the modules are {family.name!r}")
    return family
