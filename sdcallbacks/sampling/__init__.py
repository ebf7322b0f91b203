"""Validation sampling from the live training modules, isolated from training."""

from sdcallbacks.sampling.modes import ModuleModes, eval_mode
from sdcallbacks.sampling.modules import TrainingModules
from sdcallbacks.sampling.pipeline import build_pipeline
from sdcallbacks.sampling.rng import RNGState, isolated_rng
from sdcallbacks.sampling.sampler import ValidationSampler
from sdcallbacks.sampling.schedule import ValidationSchedule

__all__ = [
    "ModuleModes",
    "RNGState",
    "TrainingModules",
    "ValidationSampler",
    "ValidationSchedule",
    "build_pipeline",
    "eval_mode",
    "isolated_rng",
]
