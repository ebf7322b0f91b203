"""A diffusers pipeline of the modules' family, assembled from the live training modules.

No reload from disk and no ``.to(dtype)`` of shared modules (casting the trainable denoiser to fp16 breaks
the next optimizer step with "Attempting to unscale FP16 gradients"); the scheduler is a fresh instance
made from the training scheduler's config, because ``set_timesteps`` mutates the scheduler it is called on.
"""

from __future__ import annotations

from typing import Any

from sdcallbacks.sampling.families import Family, resolve_family, tokenizer_of
from sdcallbacks.sampling.modules import TrainingModules, unwrap

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
# The samplers of flow-matching families: their training scheduler (FlowMatchEulerDiscreteScheduler), as
# their published pipelines ship it. The DDPM-family schedulers above would integrate the wrong ODE.
FLOW_SCHEDULERS = ("auto", "training")


def scheduler_problem(family: Family, name: str) -> str | None:
    """Why ``sampling.scheduler`` cannot sample ``family``, or None."""
    if family.flow_matching and name not in FLOW_SCHEDULERS:
        return (
            f"sampling.scheduler: {name!r} samples DDPM-trained models; {family.name} is flow-matching, "
            f"sampled with its training scheduler: use 'auto' or 'training'"
        )
    return None


def fresh_scheduler(name: str, training_scheduler: Any, family: Family | None = None) -> Any:
    """A new scheduler of the configured kind, built from the training scheduler's config. ``auto`` is
    DDIM for SD/SDXL and the training scheduler's own class for flow-matching families."""
    import diffusers

    if name == "auto":
        name = "training" if family is not None and family.flow_matching else "ddim"
    cls = type(training_scheduler) if name == "training" else getattr(diffusers, SCHEDULERS[name])
    return cls.from_config(training_scheduler.config, **SCHEDULER_OPTIONS.get(name, {}))


def build_pipeline(modules: TrainingModules, scheduler_name: str = "auto") -> Any:
    """The family's diffusers pipeline over the live modules (see :mod:`sdcallbacks.sampling.families`)."""
    import diffusers

    family = resolve_family(modules)
    parts: dict[str, Any] = {
        family.denoiser: unwrap(modules.denoiser),
        "vae": unwrap(modules.vae),
        "scheduler": fresh_scheduler(scheduler_name, modules.noise_scheduler, family),
    }
    for encoder in family.encoders + family.optional_encoders:
        parts[encoder] = unwrap(getattr(modules, encoder))
        parts[tokenizer_of(encoder)] = getattr(modules, tokenizer_of(encoder))
    if family.name == "sd":
        parts |= {"safety_checker": None, "feature_extractor": None, "requires_safety_checker": False}
    elif family.name == "sdxl":
        parts["add_watermarker"] = False
    pipe = getattr(diffusers, family.pipeline)(**parts)
    pipe.set_progress_bar_config(disable=True)
    return pipe
