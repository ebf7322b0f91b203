"""A run config made into its working parts: the validation core and the runner around it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sdcallbacks.aggregation.composite import ScoreWeight
from sdcallbacks.config.schema import RunConfig
from sdcallbacks.execution.processes import Processes
from sdcallbacks.execution.publish import Publisher
from sdcallbacks.execution.runner import ValidationRunner
from sdcallbacks.metrics import BackbonePool, Metric, build_metrics
from sdcallbacks.metrics.loss import ValidationLoss
from sdcallbacks.outputs.writer import OutputWriter
from sdcallbacks.prompts.library import expand_jobs, load_prompts
from sdcallbacks.sampling.families import Family
from sdcallbacks.sampling.modules import TrainingModules
from sdcallbacks.sampling.pipeline import scheduler_problem
from sdcallbacks.sampling.sampler import ValidationSampler
from sdcallbacks.sampling.variants import lora_layers
from sdcallbacks.selection.checks import check_config
from sdcallbacks.selection.selection import Selection
from sdcallbacks.trackers import TrackerLogger
from sdcallbacks.trackers.logger import flatten
from sdcallbacks.validation.core import Validation
from sdcallbacks.weights import default_cache_dir


def placed_under_project(config: RunConfig, accelerator: Any = None) -> RunConfig:
    """``config`` with an ``output_dir`` it leaves unset placed at ``<project_dir>/validation`` of the
    accelerator (diffusers' scripts set ``project_dir`` to their ``--output_dir``), so each run's validation
    outputs live with its checkpoints wherever it is started from; unchanged when it sets one or the
    accelerator has no project dir."""
    project = getattr(accelerator, "project_dir", None)
    if "output_dir" in config.model_fields_set or not project:
        return config
    return config.model_copy(update={"output_dir": Path(project) / "validation"})


def feature_cache_dir(config: RunConfig) -> Path | None:
    """Where reference embeddings are cached on disk, or None when caching is off."""
    if not config.metrics.cache_references:
        return None
    return config.metrics.cache_dir or default_cache_dir() / "features"


def metrics_device(config: RunConfig, accelerator: Any = None) -> str:
    return config.metrics.device or (str(accelerator.device) if accelerator is not None else "cpu")


def build_validation(
    config: RunConfig, metrics: list[Metric] | None = None, device: str = "cpu"
) -> Validation:
    """The validation core of ``config`` (its sampler is set once the modules are known). Raises a
    :class:`~sdcallbacks.config.ConfigError` listing every problem of the config as a whole."""
    if metrics is None:
        metrics = build_metrics(
            config.metrics.enabled(), device=device, pool=BackbonePool(feature_cache_dir(config))
        )
    check_config(config, metrics)  # a located config error now, not hours into training
    specs = {key: spec for metric in metrics for key, spec in metric.key_specs().items()}
    weights = {
        key: ScoreWeight(term.weight, term.mode == "max" if term.mode else specs[key].higher_is_better)
        for key, term in config.score_terms().items()
    }
    backbones = config.scoring.backbones or ("resident" if device.startswith("cpu") else "offload")
    return Validation(
        expand_jobs(load_prompts(config)),
        metrics,
        val_loss=ValidationLoss(config.metrics.val_loss) if config.metrics.val_loss else None,
        ema=config.sampling.ema,
        lora_scales=config.sampling.lora_scales,
        score_weights=weights,
        score_beta=config.score_beta if config.score_combine == "fbeta" else None,
        on_error=config.on_error,
        backbones=backbones,
    )


def family_problems(
    config: RunConfig, family: Family, modules: TrainingModules, validation: Validation
) -> list[str]:
    """What of ``config`` the modules' family cannot do (raised before training): a sampler of another
    kind of model, an image side its latents cannot take, a ``val_loss`` it cannot compute, LoRA scales
    without a LoRA."""
    problems = [p for p in [scheduler_problem(family, config.sampling.scheduler)] if p]
    factor = family.size_factor(modules)
    sizes = {(job.prompt.name, job.prompt.width, job.prompt.height) for job in validation.jobs}
    for name, width, height in sorted(sizes):
        if width % factor or height % factor:
            problems.append(
                f"prompt {name!r}: width and height are {width}x{height} px; these {family.name} modules "
                f"draw sides that are a multiple of {factor} (VAE downscale x latent patch)"
            )
    loss = validation.val_loss
    if loss is not None and (problem := loss.unsupported(modules, family)) is not None:
        problems.append(problem)
    if config.sampling.lora_scales and not lora_layers(modules):
        problems.append(
            f"sampling.lora_scales: {config.sampling.lora_scales} scale LoRA adapters, but the modules given "
            "to on_train_start carry none (a full fine-tune has no adapter scale)"
        )
    return problems


def build_sampler(
    config: RunConfig,
    modules: TrainingModules,
    accelerator: Any = None,
    *,
    device: str | None = None,
    mixed_precision: str | None = None,
) -> ValidationSampler:
    """The sampler of ``config`` over ``modules``, on the accelerator's device and mixed precision (or the
    ones given, for code without an accelerator)."""
    if accelerator is not None:
        device = device or accelerator.device
        mixed_precision = mixed_precision or str(getattr(accelerator, "mixed_precision", "no") or "no")
    return ValidationSampler(
        modules,
        scheduler=config.sampling.scheduler,
        batch_size=config.sampling.batch_size,
        device=device,
        mixed_precision=mixed_precision or "no",
        max_sequence_length=config.sampling.max_sequence_length,
    )


def build_publisher(config: RunConfig, validation: Validation, accelerator: Any = None) -> Publisher:
    """Local files under ``config.output_dir`` and the trackers (the accelerator's, or a W&B run of the
    callback's own with ``trackers.wandb.create_run``)."""
    trackers = TrackerLogger(
        accelerator,
        config.trackers,
        monitor=config.monitor,
        mode=config.mode,
        run_config=flatten(config.model_dump(mode="json")),
        directory=str(config.output_dir),
    )
    return Publisher(
        OutputWriter(config.output_dir), trackers, validation.image_score_keys, images=config.trackers.images
    )


def build_runner(
    config: RunConfig, accelerator: Any = None, metrics: list[Metric] | None = None
) -> ValidationRunner:
    device = metrics_device(config, accelerator)
    validation = build_validation(config, metrics, device)
    publisher = build_publisher(config, validation, accelerator)
    return ValidationRunner(
        validation,
        Selection(config),
        publisher,
        Processes(accelerator),
        mode=config.scoring.mode,
        wait_s=config.scoring.wait_s,
        on_error=config.on_error,
        device=device,
    )
