"""The run configuration, as pydantic v2 models.

Every model forbids unknown keys, so a typo in a YAML file is an error naming the key instead of a setting
that silently does nothing. ``sdcallbacks schema`` prints the JSON schema of :class:`RunConfig`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, PositiveFloat, PositiveInt, PrivateAttr, field_validator, model_validator

from sdcallbacks.config.base import ImageSide, Seed, StrictModel
from sdcallbacks.config.metrics import MetricsConfig
from sdcallbacks.config.rules import ThresholdRule


class PromptDefaults(StrictModel):
    """Sampling settings used by every prompt that does not set its own (kohya's defaults)."""

    negative_prompt: str = ""
    num_images: PositiveInt = 4
    width: ImageSide = 512
    height: ImageSide = 512
    steps: PositiveInt = 30
    guidance_scale: float = Field(7.5, ge=0.0)


class PromptEntry(StrictModel):
    """One validation prompt. ``seeds`` pins the seeds (one seed with ``num_images`` > 1 counts up from it);
    otherwise ``num_images`` seeds are derived from the run seed."""

    name: str | None = None
    prompt: str
    negative_prompt: str | None = None
    seeds: list[Seed] | None = None
    num_images: PositiveInt | None = None
    width: ImageSide | None = None
    height: ImageSide | None = None
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


class SamplingConfig(StrictModel):
    """How validation images are drawn from the live training modules."""

    family: Literal["auto", "sd", "sdxl", "sd3", "flux"] = Field(
        "auto", description="The model family; auto: told from the modules given to on_train_start."
    )
    scheduler: Literal["auto", "ddim", "euler", "euler_a", "dpm++", "pndm", "training"] = Field(
        "auto",
        description="auto: ddim for SD/SDXL, the training scheduler (flow matching) for SD3/Flux; "
        "training: a fresh copy of the training noise scheduler's class and config.",
    )
    text_encoders_from: str | None = Field(
        None,
        description="Base model (hub id or pipeline folder) to load text encoders and tokenizers from when "
        "on_train_start gets None for them (--pre_compute_text_embeddings); default: the denoiser's origin.",
    )
    max_sequence_length: PositiveInt | None = Field(
        None,
        description="T5 tokens read per prompt (SD3, Flux); default: the pipeline's (SD3 256, Flux 512).",
    )
    batch_size: PositiveInt = 4
    ema: Literal["none", "ema", "both"] = "none"
    baseline: bool = Field(True, description="Validate the base model (LoRA disabled) before training.")
    lora_scales: list[float] = Field(
        default_factory=list,
        description="Also validate at these LoRA scales (peft's scaling; no reload), each logged as "
        "val/scale_<s>/...; the model at 1.0 is always drawn first, logged as val/... .",
    )
    best_of_scales: bool = Field(
        False,
        description="Selection takes the monitored key's best value over 1.0 and lora_scales; the scale it "
        "came from is logged (val/lora_scale/best) and recorded with the checkpoint. Otherwise the monitor "
        "key decides (val/scale_<s>/... for a fixed scale).",
    )

    @field_validator("lora_scales")
    @classmethod
    def _scales(cls, scales: list[float]) -> list[float]:
        if any(s < 0 for s in scales):
            raise ValueError(f"LoRA scales are >= 0, got {scales}")
        return list(dict.fromkeys(float(s) for s in scales if s != 1.0))  # 1.0 is the model itself

    @model_validator(mode="after")
    def _best_of_scales(self) -> SamplingConfig:
        if self.best_of_scales and not self.lora_scales:
            raise ValueError("best_of_scales needs lora_scales other than 1.0")
        return self


class ScheduleConfig(StrictModel):
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


class CheckpointConfig(StrictModel):
    """Lightning ``ModelCheckpoint`` semantics on ``monitor``: the ``save_top_k`` best validations are kept
    (LoRA in diffusers format, else the UNet); strictly better only, NaN never best."""

    enabled: bool = True
    dirpath: Path | None = Field(None, description="Default: <output_dir>/checkpoints.")
    save_top_k: int = Field(1, ge=-1, description="Best validations kept on disk: 0 none, -1 all.")
    save_last: bool = Field(False, description="Also keep the weights of the latest validation in last/.")


class EarlyStoppingConfig(StrictModel):
    """Lightning ``EarlyStopping`` semantics on ``monitor``; ``patience`` counts validations."""

    patience: int = Field(3, ge=0)
    min_delta: float = Field(0.0, ge=0.0)
    stopping_threshold: float | None = None
    divergence_threshold: float | None = None
    check_finite: bool = True
    strict: bool = Field(
        True, description="A validation without the monitored key is an error (else a warning, no check)."
    )
    restore_best_at_end: bool = Field(
        False, description="Load the best checkpoint's weights back into the model in on_train_end."
    )
    on_events: list[str] = Field(
        default_factory=list, description="Names of events (events:) that stop training when they fire."
    )
    check_ineligible: bool = Field(
        True,
        description="A validation that fails a gate still counts for early stopping (its monitored value "
        "is checked); false: early stopping skips it, as if it had not run.",
    )


def _rule(text: str) -> str:
    ThresholdRule.parse(text)  # a ValueError quoting the rule
    return text


class EventRule(StrictModel):
    """An overfitting signal, logged as ``val/events/<name>`` (1 while it holds) and, the first time, as an
    event line with its step. Exactly one of ``when`` and ``upturn``.

    ``when``: a threshold rule (``identity/copy/mean > 0.9``, ``diversity/mean < 0.8 * baseline``). With
    ``prompts`` or ``prompts_without`` its key's value is the mean of the per-prompt means
    (``<key>/prompt/<name>``) of those prompts only: the prompts named, or those whose text lacks the
    word (a trigger word: the CLIP-T of prompts without it falls when a LoRA leaks into them).
    ``upturn``: a key whose moving mean over ``window`` validations rises more than ``min_delta`` above
    its lowest moving mean so far (``mode: min``, e.g. ``val_loss``), or falls below its highest (``max``).
    """

    when: str | None = None
    prompts: list[str] | None = None
    prompts_without: str | None = None
    upturn: str | None = None
    window: PositiveInt = 3
    mode: Literal["min", "max"] = "min"
    min_delta: float = Field(0.0, ge=0.0)

    _check_when = field_validator("when")(lambda v: v if v is None else _rule(v))

    @model_validator(mode="after")
    def _one_kind(self) -> EventRule:
        if (self.when is None) == (self.upturn is None):
            raise ValueError("set exactly one of when (a threshold rule) and upturn (a key)")
        if (self.prompts is not None or self.prompts_without is not None) and self.when is None:
            raise ValueError("prompts / prompts_without select the prompts of a when rule")
        if self.prompts is not None and self.prompts_without is not None:
            raise ValueError("set prompts or prompts_without, not both")
        return self

    @property
    def key(self) -> str:
        if self.when is not None:
            return ThresholdRule.parse(self.when).key
        assert self.upturn is not None
        return self.upturn if self.upturn.startswith("val/") else f"val/{self.upturn}"


class ParetoConfig(StrictModel):
    """Keep the non-dominated validations over two or more keys (each with its direction)."""

    keys: dict[str, Literal["min", "max"]] = Field(..., min_length=2)

    @field_validator("keys")
    @classmethod
    def _prefixed(cls, keys: dict[str, str]) -> dict[str, str]:
        return {k if k.startswith("val/") else f"val/{k}": v for k, v in keys.items()}


class ScoreTerm(StrictModel):
    """One metric key in the composite ``val/score``."""

    weight: float = Field(1.0, gt=0.0)
    mode: Literal["min", "max"] | None = Field(None, description="Default: the metric's own direction.")


class WandbConfig(StrictModel):
    """Weights & Biases. The run is the accelerator's ``wandb`` tracker when there is one; otherwise the
    callback creates one only if ``create_run`` is set."""

    create_run: bool = False
    project: str = "sdcallbacks"
    entity: str | None = None
    name: str | None = None
    mode: Literal["online", "offline", "disabled"] | None = Field(
        None, description="Default: $WANDB_MODE, else online."
    )
    table: bool = Field(True, description="Log a wandb.Table of every image and its scores per validation.")
    log_best_checkpoint: bool = Field(False, description="Upload each new best checkpoint (alias 'best').")
    run_id: str | None = Field(
        None,
        description="With create_run: log into this W&B run (resumed if it exists, else created with this "
        "id), e.g. the trainer's run for `sdcallbacks watch --wandb-run-id`.",
    )


class TrackersConfig(StrictModel):
    wandb: WandbConfig = Field(default_factory=WandbConfig)
    tensorboard_dir: Path | None = Field(
        None,
        description="Write TensorBoard events here too (sdcallbacks evaluate/watch, or a loop without an "
        "accelerate tensorboard tracker), e.g. the trainer's logging folder. Needs the tensorboard package.",
    )
    images: bool = Field(True, description="Log one image grid per prompt per validation.")


class ScoringConfig(StrictModel):
    """When scoring runs, and where the scoring backbones (CLIP, WD14, facenet, ...) stay between
    validations."""

    mode: Literal["sync", "async"] = Field(
        "sync",
        description="async: sampling blocks training, scoring, logging and the checkpoint decision run in "
        "a background thread; a decision reaches the loop at most one validation late.",
    )
    backbones: Literal["offload", "resident"] | None = Field(
        None,
        description="offload: the scoring backbones leave the accelerator after each validation; resident: "
        "they stay. "
        "Default: offload on CUDA, resident on CPU (where there is nothing to free).",
    )
    wait_s: float = Field(
        600.0,
        ge=0.0,
        description="How long on_train_end, state_dict and the next validation wait for an in-flight "
        "scoring task before giving up on it (async).",
    )


class RunConfig(StrictModel):
    """Everything the callback needs; loaded with :func:`sdcallbacks.config.load_config`."""

    _source: Path | None = PrivateAttr(None)  # the file it was read from, for located errors

    output_dir: Path = Field(
        Path("sdcallbacks_outputs"),
        description="Where samples, metrics.jsonl and checkpoints go. Unset: <accelerator project_dir>/"
        "validation when the accelerator has one (diffusers' scripts: their --output_dir), else this.",
    )
    overwrite_output_dir: bool = Field(
        False,
        description="A new run whose output_dir holds an earlier run's outputs (metrics.jsonl, samples/, "
        "checkpoints) refuses to start unless this is set; then those outputs are deleted first. A resumed "
        "run (accelerator.load_state, or on_train_start(global_step > 0)) always appends.",
    )
    seed: Seed = 0
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
    score: dict[str, PositiveFloat | ScoreTerm] = Field(
        default_factory=dict,
        description="Composite val/score: metric key -> weight or {weight, mode}; z-scores vs the baseline.",
    )
    score_combine: Literal["weighted_z", "fbeta"] = Field(
        "weighted_z",
        description="weighted_z: the weighted mean of per-prompt z-scores against the baseline; fbeta: two "
        "keys in [0, 1], fidelity then controllability, as F_beta of their means (weights unused).",
    )
    score_beta: PositiveFloat = Field(1.0, description="beta of score_combine: fbeta.")
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig)
    early_stopping: EarlyStoppingConfig | None = None
    gates: list[str] = Field(
        default_factory=list,
        description="Rules a validation must meet to be eligible for best and top-k, e.g. "
        "'identity/mean >= 0.5', 'diversity/mean >= 0.8 * baseline', "
        "'aesthetic_laion/mean >= baseline - 0.2'.",
    )
    events: dict[str, EventRule] = Field(
        default_factory=dict, description="Overfitting signals by name (see EventRule)."
    )
    pareto: ParetoConfig | None = None
    trackers: TrackersConfig = Field(default_factory=TrackersConfig)
    scoring: ScoringConfig = Field(default_factory=ScoringConfig)
    on_error: Literal["warn", "raise"] = "warn"

    @model_validator(mode="after")
    def _has_prompts(self) -> RunConfig:
        if not self.prompts and not self.prompt_files:
            raise ValueError("no validation prompts: set prompts or prompt_files")
        if self.early_stopping is not None and self.monitor is None:
            raise ValueError("early_stopping needs monitor")
        if self.score_combine == "fbeta" and len(self.score) != 2:
            raise ValueError(
                "score_combine: fbeta takes two score keys, fidelity then controllability; "
                f"got {list(self.score)}"
            )
        if self.score and self.score_combine == "weighted_z" and not self.sampling.baseline:
            raise ValueError(
                "score standardises against the baseline validation: set sampling.baseline: true"
            )
        relative = [g for g in self.gates if ThresholdRule.parse(g).needs_baseline]
        relative += [
            e.when for e in self.events.values() if e.when and ThresholdRule.parse(e.when).needs_baseline
        ]
        if relative and not self.sampling.baseline:
            raise ValueError(
                f"{relative[0]!r} is relative to the baseline validation: set sampling.baseline: true"
            )
        es = self.early_stopping
        unknown = [name for name in (es.on_events if es else []) if name not in self.events]
        if unknown:
            raise ValueError(f"early_stopping.on_events: {unknown} not among events: {sorted(self.events)}")
        if (
            es is not None
            and es.restore_best_at_end
            and not (self.checkpoint.enabled and self.checkpoint.save_top_k)
        ):
            raise ValueError(
                "early_stopping.restore_best_at_end loads the best checkpoint: it needs "
                "checkpoint.enabled and save_top_k != 0"
            )
        return self

    @property
    def source(self) -> Path | None:
        """The config file this was loaded from, if any."""
        return self._source

    @field_validator("gates")
    @classmethod
    def _gate_rules(cls, gates: list[str]) -> list[str]:
        return [_rule(g) for g in gates]

    def gate_rules(self) -> list[ThresholdRule]:
        return [ThresholdRule.parse(g) for g in self.gates]

    def score_terms(self) -> dict[str, ScoreTerm]:
        return {k: v if isinstance(v, ScoreTerm) else ScoreTerm(weight=v) for k, v in self.score.items()}
