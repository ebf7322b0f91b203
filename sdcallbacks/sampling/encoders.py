"""Text encoders for validation when training runs without them.

diffusers' scripts with ``--pre_compute_text_embeddings`` (and the SD3/Flux scripts with one instance
prompt) encode their prompts once and drop the text encoders and tokenizers, so ``on_train_start`` gets
``None`` for them. Validation prompts still need encoding: the missing encoders and tokenizers are loaded
from the base model, the folder or hub id in ``sampling.text_encoders_from`` or else the one the denoiser
was loaded from (its ``config._name_or_path``, which diffusers' ``from_pretrained`` records), each with the
class its ``model_index.json`` names. They are kept on the CPU in the dtype of the denoiser's frozen
weights and moved to the training device only while a validation uses them (:func:`loaded_on`).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import torch

from sdcallbacks.sampling.families import FAMILIES, ModulesError, detect_family, tokenizer_of
from sdcallbacks.sampling.modules import TrainingModules, unwrap

logger = logging.getLogger("sdcallbacks")


def base_model_of(modules: TrainingModules, text_encoders_from: str | None) -> str | None:
    """Where missing text encoders are loaded from: the configured source, else the denoiser's origin."""
    if text_encoders_from:
        return text_encoders_from
    origin = getattr(unwrap(modules.denoiser).config, "_name_or_path", None)
    return str(origin) if origin else None


def frozen_dtype(module: torch.nn.Module) -> torch.dtype:
    """The dtype of the first frozen parameter (the base weights a LoRA script casts to weight_dtype)."""
    for param in unwrap(module).parameters():
        if not param.requires_grad:
            return param.dtype
    return torch.float32


def load_missing_encoders(modules: TrainingModules, text_encoders_from: str | None = None) -> list[str]:
    """Fill in the text encoders and tokenizers the family needs and ``modules`` lack (all of them, SD3's
    optional T5 included when the base model has it), in place. Returns the names of the encoders loaded
    (kept on the CPU); nothing is loaded when none is missing. A missing encoder with nowhere to load it
    from is a :class:`ModulesError` naming both ways out."""
    import transformers
    from diffusers import DiffusionPipeline

    family = FAMILIES[detect_family(modules)]
    names = family.encoders + family.optional_encoders
    missing = [
        e for e in family.encoders if getattr(modules, e) is None or getattr(modules, tokenizer_of(e)) is None
    ]
    if not missing:
        return []
    source = base_model_of(modules, text_encoders_from)
    if source is None:
        raise ModulesError(
            f"{', '.join(f'{e}/{tokenizer_of(e)}' for e in missing)} not given (None), as diffusers' scripts "
            "leave them with "
            "--pre_compute_text_embeddings, and there is nowhere to load them from for validation: pass "
            "them to on_train_start, or set sampling.text_encoders_from to the base model (hub id or "
            "pipeline folder)"
        )
    try:
        index = DiffusionPipeline.load_config(source)
    except Exception as err:  # a hub or file error, named with where it looked
        raise ModulesError(f"cannot read model_index.json of {source!r} to load {missing}: {err}") from err
    dtype = frozen_dtype(modules.denoiser)
    loaded = []
    for encoder in names:
        tokenizer = tokenizer_of(encoder)
        if getattr(modules, encoder) is not None and getattr(modules, tokenizer) is not None:
            continue
        if encoder not in index or index[encoder][1] is None:
            if encoder in family.encoders:
                raise ModulesError(
                    f"{source!r} has no {encoder} in its model_index.json; {family.name} needs it"
                )
            continue
        if getattr(modules, encoder) is None:
            cls = getattr(transformers, index[encoder][1])
            setattr(
                modules, encoder, cls.from_pretrained(source, subfolder=encoder, torch_dtype=dtype).eval()
            )
            loaded.append(encoder)
        if getattr(modules, tokenizer) is None:
            if tokenizer not in index:
                raise ModulesError(f"{source!r} has {encoder} but no {tokenizer} in its model_index.json")
            cls = getattr(transformers, index[tokenizer][1])
            setattr(modules, tokenizer, cls.from_pretrained(source, subfolder=tokenizer))
    modules.loaded_encoders = tuple(loaded)
    logger.info(
        "sdcallbacks: loaded %s from %s for validation (kept on the CPU between validations)", loaded, source
    )
    return loaded


@contextlib.contextmanager
def loaded_on(modules: TrainingModules, device: torch.device | str | None) -> Iterator[None]:
    """The text encoders :func:`load_missing_encoders` loaded, on ``device`` for the body and back on the
    CPU afterwards (training never has them on its device)."""
    moved = [getattr(modules, name) for name in modules.loaded_encoders]
    if device is None or torch.device(device).type == "cpu" or not moved:
        yield
        return
    try:
        for module in moved:
            module.to(device)
        yield
    finally:
        for module in moved:
            module.to("cpu")
