"""The run configuration, as pydantic v2 models.

Every model forbids unknown keys, so a typo in a YAML file is an error naming the key instead of a setting
that silently does nothing. ``sdcallbacks schema`` prints the JSON schema of :class:`RunConfig`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, field_validator, model_validator

from sdcallbacks.config.metrics import MetricsConfig


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class PromptDefaults(_Strict):
    """Sampling settings used by every prompt that does not set its own (kohya's defaults)."""

    negative_prompt: str = ""
    num_images: PositiveInt = 4
    width: PositiveInt = 512
    height: PositiveInt = 512
    steps: PositiveInt = 30
    guidance_scale: float = Field(7.5, ge=0.0)


class PromptEntry(_Strict):
    """One validation prompt. ``seeds`` pins the seeds (one seed with ``num_images`` > 1 counts up from it);
    otherwise ``num_images`` seeds are derived from the run seed."""

    name: str | None = None
    prompt: str
    negative_prompt: str | None = None
    seeds: list[int] | None = None
    num_images: PositiveInt | None = None
    width: PositiveInt | None = None
    height: PositiveInt | None = None
    steps: PositiveInt | None = None
    guidance_scale: float | None = Field(None, ge=0.0)

    @field_validator("seeds")
    @classmethod
    def _seeds_not_empty(cls, seeds: list[int] | None) -> list[int] | None:
        if seeds is not None and not seeds:
            raise ValueError("seeds must list at least one seed (or leave it out and set num_images)")
        return seeds

    @model_validator(mode="after")
    def _seeds_xor_num_images(self) -> PromptEntry:
        # One seed with several images counts upwards from it (kohya's --d); a longer list must match.
        if self.seeds and self.num_images is not None and 1 < len(self.seeds) != self.num_images:
            raise ValueError(f"seeds has {len(self.seeds)} entries but num_images is {self.num_images}")
        return self


class SamplingConfig(_Strict):
    """How validation images are drawn from the live training modules."""

    scheduler: Literal["ddim", "euler", "euler_a", "dpm++", "pndm", "training"] = "ddim"
    batch_size: PositiveInt = 4
    ema: Literal["none", "ema", "both"] = "none"
    baseline: bool = Field(True, description="Validate the base model (LoRA disabled) before training.")


class ScheduleConfig(_Strict):
    """When validations run. Triggers are OR-ed; none fires before ``start_step``."""

    every_n_steps: PositiveInt | None = None
    every_n_epochs: float | None = Field(None, gt=0)
    every_n_minutes: float | None = Field(None, gt=0)
    start_step: int = Field(0, ge=0)
    validate_at_end: bool = True

    @model_validator(mode="after")
    def _some_trigger(self) -> ScheduleConfig:
        if self.every_n_steps is None and self.every_n_epochs is None and self.every_n_minutes is None:
            raise ValueError("set at least one of every_n_steps, every_n_epochs, every_n_minutes")
        return self


class CheckpointConfig(_Strict):
    """Keeps the weights of the best validation (LoRA in diffusers format, else the UNet)."""

    enabled: bool = True
    dirpath: Path | None = Field(None, description="Default: <output_dir>/checkpoints.")


class EarlyStoppingConfig(_Strict):
    """Lightning ``EarlyStopping`` semantics; ``patience`` counts validations."""

    patience: int = Field(3, ge=0)
    min_delta: float = Field(0.0, ge=0.0)
    stopping_threshold: float | None = None
    divergence_threshold: float | None = None
    check_finite: bool = True


class RunConfig(_Strict):
    """Everything the callback needs; loaded with :func:`sdcallbacks.config.load_config`."""

    output_dir: Path = Path("sdcallbacks_outputs")
    seed: int = 0
    prompts: list[PromptEntry] = Field(default_factory=list)
    prompt_files: list[Path] = Field(default_factory=list)
    defaults: PromptDefaults = Field(default_factory=PromptDefaults)
    sampling: SamplingConfig = Field(default_factory=SamplingConfig)
    schedule: ScheduleConfig = Field(default_factory=lambda: ScheduleConfig(every_n_steps=500))
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    monitor: str | None = Field(
        None, description="Logged key that decides the best step, e.g. val/tag_accuracy/mean."
    )
    mode: Literal["min", "max"] = "max"
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig)
    early_stopping: EarlyStoppingConfig | None = None
    on_error: Literal["warn", "raise"] = "warn"

    @model_validator(mode="after")
    def _has_prompts(self) -> RunConfig:
        if not self.prompts and not self.prompt_files:
            raise ValueError("no validation prompts: set prompts or prompt_files")
        if self.early_stopping is not None and self.monitor is None:
            raise ValueError("early_stopping needs monitor")
        return self
