"""Deterministic validation sampling from the live training modules.

Guarantees, each covered by a test:

* every image has its own CPU ``torch.Generator`` seeded from its :class:`~sdcallbacks.prompts.ImageJob`,
  so an image is the same for the same weights whatever the batch split or the number of processes;
* the global random streams (python, numpy, torch CPU, CUDA) are restored afterwards;
* every submodule's train/eval flag is restored exactly, and LoRA dropout is off while sampling;
* no parameter changes dtype or device; the training scheduler is not touched;
* sampling runs under ``no_grad`` and autocast that follows the accelerator's mixed precision.

``variant`` selects the weights (:mod:`sdcallbacks.sampling.variants`). Every family draws through its
own diffusers pipeline (:mod:`sdcallbacks.sampling.families`). For Flux, a prompt's ``guidance_scale`` is
the distilled guidance the transformer is conditioned on (FluxPipeline's ``guidance_scale``), with one
pass per step and no negative prompt; a negative prompt is ignored with a warning.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from itertools import groupby
from typing import Any

import torch
from PIL import Image

from sdcallbacks.prompts.library import ImageJob
from sdcallbacks.prompts.parameters import GenerationParameters, sampler_name
from sdcallbacks.sampling.encoders import loaded_on
from sdcallbacks.sampling.families import resolve_family, tokenizer_of
from sdcallbacks.sampling.modes import eval_mode
from sdcallbacks.sampling.modules import TrainingModules, unwrap
from sdcallbacks.sampling.pipeline import build_pipeline
from sdcallbacks.sampling.rng import isolated_rng
from sdcallbacks.sampling.variants import Variant, variant_weights

logger = logging.getLogger("sdcallbacks")


def autocast_for(device: torch.device, mixed_precision: str) -> contextlib.AbstractContextManager:
    """Autocast matching accelerate's ``mixed_precision`` ("no", "fp16", "bf16"); CPU autocast is bf16."""
    if mixed_precision not in ("fp16", "bf16"):
        return contextlib.nullcontext()
    dtype = torch.float16 if mixed_precision == "fp16" and device.type == "cuda" else torch.bfloat16
    return torch.autocast(device_type=device.type, dtype=dtype)


@contextlib.contextmanager
def vae_dtypes_kept(vae: torch.nn.Module) -> Iterator[None]:
    """SDXL's pipeline decodes an fp16 VAE with ``force_upcast`` in fp32 (``upcast_vae``) and casts it back
    only when decoding succeeds: the shared VAE gets its dtypes back here whatever happened."""
    dtypes = {param: param.dtype for param in unwrap(vae).parameters()}
    try:
        yield
    finally:
        for param, dtype in dtypes.items():
            if param.dtype != dtype:
                param.data = param.data.to(dtype)


def _settings(job: ImageJob) -> tuple[int, int, int, float]:
    p = job.prompt
    return (p.width, p.height, p.steps, p.guidance_scale)


class ValidationSampler:
    """Draws the images of a list of jobs from the live modules."""

    def __init__(
        self,
        modules: TrainingModules,
        *,
        scheduler: str = "auto",
        batch_size: int = 4,
        device: torch.device | str | None = None,
        mixed_precision: str = "no",
        max_sequence_length: int | None = None,
    ):
        self.modules = modules
        self.family = resolve_family(modules)
        self.scheduler = scheduler
        self.batch_size = batch_size
        self.device = (
            torch.device(device) if device is not None else next(unwrap(modules.denoiser).parameters()).device
        )
        self.mixed_precision = mixed_precision
        self.max_sequence_length = max_sequence_length or self.family.max_sequence_length
        self.checked: set[str] = set()  # prompts already counted against the text encoders
        self.negative_ignored = False  # warned that Flux ignores negative prompts

    def token_limits(self) -> list[tuple[Any, int]]:
        """(tokenizer, tokens its encoder reads) of every text encoder: CLIP's ``model_max_length``, T5's
        ``max_sequence_length``."""
        limits = []
        for encoder in self.family.encoders + self.family.optional_encoders:
            tokenizer = getattr(self.modules, tokenizer_of(encoder))
            if tokenizer is not None:
                t5 = encoder == self.family.t5
                limits.append((tokenizer, self.max_sequence_length if t5 else tokenizer.model_max_length))
        return limits

    def warn_if_truncated(self, jobs: Sequence[ImageJob]) -> None:
        """Warn once per prompt (and negative prompt) longer than a text encoder reads: the pipeline cuts
        it at ``model_max_length`` tokens, so the images follow only its start."""
        texts = dict.fromkeys(t for job in jobs for t in (job.prompt.prompt, job.prompt.negative_prompt) if t)
        for text in texts.keys() - self.checked:
            self.checked.add(text)  # the prompt set is the same at every validation: count each once
            for tokenizer, limit in self.token_limits():
                count = len(tokenizer(text, truncation=False).input_ids)
                if count > limit:
                    logger.warning(
                        "sdcallbacks: a validation prompt has %d tokens; the text encoder reads %d, so the "
                        "images follow only its start: %r",
                        count,
                        limit,
                        text[:120],
                    )
                    break

    def warn_if_negative_ignored(self, jobs: Sequence[ImageJob]) -> None:
        if self.family.name != "flux" or self.negative_ignored:
            return
        if any(job.prompt.negative_prompt for job in jobs):
            self.negative_ignored = True
            logger.warning(
                "sdcallbacks: Flux draws without negative prompts (its guidance is distilled into the "
                "transformer); the validation prompts' negative_prompt is ignored"
            )

    def variant_weights(self, variant: Variant) -> contextlib.AbstractContextManager:
        return variant_weights(self.modules, variant)

    def sample(self, jobs: Sequence[ImageJob], variant: Variant = "model") -> list[Image.Image]:
        """One PIL image per job, in the order of ``jobs``."""
        if not jobs:
            return []
        self.warn_if_truncated(jobs)
        self.warn_if_negative_ignored(jobs)
        cuda_devices = [self.device.index or 0] if self.device.type == "cuda" else []
        images: list[Image.Image] = []
        with (
            isolated_rng(cuda_devices),
            eval_mode(*self.modules.torch_modules()),
            self.variant_weights(variant),
            torch.no_grad(),
            autocast_for(self.device, self.mixed_precision),
            vae_dtypes_kept(self.modules.vae),
            loaded_on(self.modules, self.device),
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
        options = {}
        if self.family.t5 is not None:
            options["max_sequence_length"] = self.max_sequence_length
        if self.family.name != "flux":
            options["negative_prompt"] = negative if cfg > 1.0 and any(negative) else None
        out = pipe(
            prompt=[job.prompt.prompt for job in chunk],
            width=width,
            height=height,
            num_inference_steps=steps,
            guidance_scale=cfg,
            generator=generators,
            output_type="pil",
            **options,
        )
        images = [im.convert("RGB") for im in out.images]
        sampler = sampler_name(pipe.scheduler)
        for image, job in zip(images, chunk):
            # What a web UI needs to draw it again; the writer saves it as the PNG's parameters chunk.
            image.info["parameters"] = GenerationParameters(
                job.prompt.prompt,
                job.prompt.negative_prompt if options.get("negative_prompt") else "",
                {
                    "Steps": str(steps),
                    "Sampler": sampler,
                    "CFG scale": f"{cfg:g}",
                    "Seed": str(job.seed),
                    "Size": f"{width}x{height}",
                },
            ).to_text()
        return images
