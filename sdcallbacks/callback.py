"""``ValidationCallback``: sample, score, log, keep the best and stop early, from a plain accelerate loop.

Usage (the five added lines)::

    cb = ValidationCallback.from_config("configs/my_run.yaml", accelerator=accelerator)
    cb.on_train_start(unet=unet, text_encoder=text_encoder, vae=vae, tokenizer=tokenizer,
                      noise_scheduler=noise_scheduler)
    control = cb.on_step_end(global_step)   # after each optimizer step; a no-op unless due
    if control.should_stop: break
    cb.on_train_end()

Data flow of one validation: the schedule says it is due → the sampler draws this rank's share of the
(prompt, seed) jobs → each metric scores them → records are gathered to the main process → local files,
aggregates and trackers → best checkpoint and early stopping decide → the decision reaches every rank.

A validation that fails (a metric raising, a corrupt image) is logged with its traceback and training
goes on (``on_error: warn``); ``on_error: raise`` re-raises for debugging. A failing metric only loses
its own scores. Records already written to ``metrics.jsonl`` are never lost.
"""

from __future__ import annotations

import logging
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from sdcallbacks.aggregation.records import ImageRecord, aggregate, record_scores, set_values
from sdcallbacks.config.loading import load_config, validate_config
from sdcallbacks.config.schema import RunConfig
from sdcallbacks.metrics import BackbonePool, ImageBatch, KeySpec, Metric, build_metrics
from sdcallbacks.metrics.loss import ValidationLoss
from sdcallbacks.outputs.writer import OutputWriter
from sdcallbacks.prompts.library import expand_jobs, load_prompts
from sdcallbacks.sampling.pipeline import TrainingModules
from sdcallbacks.sampling.rng import isolated_rng
from sdcallbacks.sampling.sampler import ValidationSampler, _has_adapters
from sdcallbacks.sampling.schedule import ValidationSchedule
from sdcallbacks.selection.checkpoint import BestCheckpoint
from sdcallbacks.selection.early_stopping import EarlyStopping
from sdcallbacks.trackers.accelerate_trackers import TrackerLogger
from sdcallbacks.weights import default_cache_dir

logger = logging.getLogger("sdcallbacks")


def feature_cache_dir(config: RunConfig) -> Path | None:
    """Where reference embeddings are cached on disk, or None when caching is off."""
    if not config.metrics.cache_references:
        return None
    return config.metrics.cache_dir or default_cache_dir() / "features"


@dataclass(frozen=True)
class Control:
    """What the training loop should do after this step."""

    should_validate: bool = False
    should_stop: bool = False
    should_save: bool = False


_CONTINUE = Control()


class ValidationCallback:
    def __init__(self, config: RunConfig, accelerator: Any = None, metrics: list[Metric] | None = None):
        self.config = config
        self.accelerator = accelerator
        self.prompts = load_prompts(config)
        self.jobs = expand_jobs(self.prompts)
        self.schedule = ValidationSchedule(config.schedule)
        device = config.metrics.device or (str(accelerator.device) if accelerator is not None else "cpu")
        self.metrics = (
            metrics
            if metrics is not None
            else build_metrics(
                config.metrics.enabled(), device=device, pool=BackbonePool(feature_cache_dir(config))
            )
        )
        self.val_loss = ValidationLoss(config.metrics.val_loss) if config.metrics.val_loss else None
        self.key_specs: dict[str, KeySpec] = {k: v for m in self.metrics for k, v in m.key_specs().items()}
        self.writer = OutputWriter(config.output_dir)
        self.trackers = TrackerLogger(accelerator)
        self.checkpoint = (
            BestCheckpoint(
                config.checkpoint.dirpath or config.output_dir / "checkpoints", config.monitor, config.mode
            )
            if config.monitor is not None and config.checkpoint.enabled
            else None
        )
        es = config.early_stopping
        self.early_stopping = (
            EarlyStopping(
                config.monitor,
                config.mode,
                es.patience,
                es.min_delta,
                es.stopping_threshold,
                es.divergence_threshold,
                es.check_finite,
            )
            if es is not None and config.monitor is not None
            else None
        )
        self.modules: TrainingModules | None = None
        self.sampler: ValidationSampler | None = None
        self.baseline: dict[str, list[ImageRecord]] = {}
        self.baseline_sets: dict[str, dict[str, float | None]] = {}
        self.history: list[dict[str, float]] = []
        self.failed_validations = 0

    @classmethod
    def from_config(cls, config: str | Path | dict | RunConfig, accelerator: Any = None, **kwargs: Any):
        if isinstance(config, RunConfig):
            run_config = config
        elif isinstance(config, dict):
            run_config = validate_config(config)
        else:
            run_config = load_config(config)
        return cls(run_config, accelerator=accelerator, **kwargs)

    # -- processes -------------------------------------------------------------------------------

    @property
    def is_main_process(self) -> bool:
        return self.accelerator is None or self.accelerator.is_main_process

    @property
    def _world(self) -> tuple[int, int]:
        if self.accelerator is None:
            return 0, 1
        return self.accelerator.process_index, self.accelerator.num_processes

    # -- hooks -----------------------------------------------------------------------------------

    def on_train_start(
        self,
        *,
        unet: torch.nn.Module,
        vae: torch.nn.Module,
        text_encoder: torch.nn.Module,
        tokenizer: Any,
        noise_scheduler: Any,
        text_encoder_2: torch.nn.Module | None = None,
        tokenizer_2: Any = None,
        ema_unet: Any = None,
        global_step: int = 0,
        steps_per_epoch: float | None = None,
    ) -> Control:
        """Register the training modules; run the baseline validation unless it already ran."""
        self.modules = TrainingModules(
            unet, vae, text_encoder, tokenizer, noise_scheduler, text_encoder_2, tokenizer_2, ema_unet
        )
        device = self.accelerator.device if self.accelerator is not None else None
        mixed = str(getattr(self.accelerator, "mixed_precision", "no") or "no")
        self.sampler = ValidationSampler(
            self.modules,
            scheduler=self.config.sampling.scheduler,
            batch_size=self.config.sampling.batch_size,
            device=device,
            mixed_precision=mixed,
        )
        self.schedule.start(global_step, steps_per_epoch)
        if self.config.sampling.baseline and not self.baseline:
            return self.validate(global_step, baseline=True)
        return _CONTINUE

    def on_step_end(self, global_step: int) -> Control:
        """Call after every optimizer step. Costs microseconds unless a validation is due."""
        if self.accelerator is not None and not self.accelerator.sync_gradients:
            return _CONTINUE
        if not self.schedule.is_due(global_step):
            self._loss_between_validations(global_step)
            return _CONTINUE
        return self.validate(global_step)

    def _loss_between_validations(self, step: int) -> None:
        every = self.config.metrics.val_loss.every_n_steps if self.val_loss is not None else None
        if every is None or step % every or not self.is_main_process or self.sampler is None:
            return
        values = set_values(self._loss("model", step), self.baseline_sets.get(self._reference_variant()))
        self.writer.append_aggregate(step, "val_loss", values, baseline=False)
        self.trackers.log_scalars(values, step)

    def _reference_variant(self) -> str:
        return "base" if "base" in self.baseline else "model"

    def on_train_end(self, global_step: int | None = None) -> Control:
        """Validate the final step unless it already was (``schedule.validate_at_end``)."""
        if global_step is not None and self.schedule.is_due_at_end(global_step):
            return self.validate(global_step)
        return _CONTINUE

    # -- one validation --------------------------------------------------------------------------

    def _variants(self, baseline: bool) -> list[str]:
        if baseline:
            return (
                ["base"]
                if self.modules is not None and any(map(_has_adapters, self.modules.torch_modules()))
                else ["model"]
            )
        return {"none": ["model"], "ema": ["ema"], "both": ["model", "ema"]}[self.config.sampling.ema]

    def validate(self, global_step: int, baseline: bool = False) -> Control:
        """Run one validation now (all ranks must call it together)."""
        if self.sampler is None:
            raise RuntimeError("call on_train_start(...) before validating")
        self.schedule.mark_done(global_step)
        try:
            stop = self._validate(global_step, baseline)
        except Exception:
            if self.config.on_error == "raise":
                raise
            self.failed_validations += 1
            logger.error(
                "sdcallbacks: validation at step %d failed; training continues.\n%s",
                global_step,
                traceback.format_exc(),
            )
            return Control(should_validate=True)
        return Control(should_validate=True, should_stop=stop, should_save=False)

    def _validate(self, step: int, baseline: bool) -> bool:
        rank, world = self._world
        local_jobs = self.jobs[rank::world]  # strided split: no padding duplicates
        # Metrics whose score depends on other images (diversity, KID) run once on all gathered images.
        per_rank = [m for m in self.metrics if not m.needs_all_images]
        on_all = [m for m in self.metrics if m.needs_all_images]
        stop = False
        for variant in self._variants(baseline):
            started = time.perf_counter()
            images = self.sampler.sample(local_jobs, variant=variant)
            sampled = time.perf_counter()
            batch = ImageBatch.of(images, local_jobs)
            records = [ImageRecord.for_job(step, variant, job) for job in local_jobs]
            with isolated_rng():  # evaluators (and their lazy loading) never move training's streams
                self._score(per_rank, batch, records, step)
            records, images = self._gather(records, images)
            if self.is_main_process:
                full = batch if world == 1 else ImageBatch.of(images, self.jobs)
                with isolated_rng():
                    sets = self._score(on_all, full, records, step)
                sets.update(self._loss(variant, step))
                timings = {"sampling_s": sampled - started, "scoring_s": time.perf_counter() - sampled}
                stop = self._report(step, variant, records, sets, images, timings, baseline) or stop
        return self._broadcast(stop)

    def _loss(self, variant: str, step: int) -> dict[str, float | None]:
        """``val_loss`` of one variant's weights (main process; it needs no collective)."""
        if self.val_loss is None:
            return {}
        try:
            with self.sampler.variant_weights(variant):
                return self.val_loss.evaluate(self.modules, self.sampler.device, self.sampler.mixed_precision)
        except Exception:
            if self.config.on_error == "raise":
                raise
            logger.error("sdcallbacks: val_loss failed at step %d.\n%s", step, traceback.format_exc())
            return {self.val_loss.name: None}

    def _score(
        self, metrics: list[Metric], batch: ImageBatch, records: list[ImageRecord], step: int
    ) -> dict[str, float | None]:
        """Per-image scores go into ``records``; set-level values are returned. A failing metric loses only
        its own scores (``on_error: warn``)."""

        def on_failure(metric: Metric) -> None:
            if self.config.on_error == "raise":
                raise
            logger.error(
                "sdcallbacks: metric %r failed at step %d; its scores are missing.\n%s",
                metric.name,
                step,
                traceback.format_exc(),
            )

        return record_scores(metrics, batch, records, on_failure)

    def _gather(self, records: list[ImageRecord], images: list[Image.Image]):
        _, world = self._world
        if world > 1:
            from accelerate.utils import gather_object

            # gather_object flattens one level: gather a list of (record, image) pairs.
            pairs = gather_object(list(zip(records, images)))
            pairs.sort(key=lambda p: (p[0].prompt_index, p[0].image_index))
            records, images = [p[0] for p in pairs], [p[1] for p in pairs]
        return records, images

    def _broadcast(self, stop: bool) -> bool:
        _, world = self._world
        if world > 1:
            from accelerate.utils import broadcast_object_list

            stop = broadcast_object_list([stop], from_process=0)[0]
        return stop

    def _report(
        self,
        step: int,
        variant: str,
        records: list[ImageRecord],
        sets: dict[str, float | None],
        images: list[Image.Image],
        timings: dict[str, float],
        baseline: bool,
    ) -> bool:
        jobs = self.jobs  # prompt-major, the order gathered records are sorted into
        label = "base" if baseline else variant
        paths = self.writer.write_images(step, label, jobs, images)
        grid = self.writer.write_grid(step, label, jobs, images)
        for record, path in zip(records, paths):
            record.image_path = str(path)
            self.writer.append_image_record(record)
        if baseline:
            self.baseline[variant] = records
            self.baseline_sets[variant] = sets
        prefix = "val" if variant in ("model", "base") else f"val/{variant}"
        reference_variant = self._reference_variant()
        reference = None if baseline else self.baseline.get(reference_variant)
        reference_sets = None if baseline else self.baseline_sets.get(reference_variant)
        values = aggregate(records, reference, prefix=prefix, specs=self.key_specs)
        values.update(set_values(sets, reference_sets, prefix=prefix))
        values.update({f"{prefix}/time/{k}": v for k, v in timings.items()})
        self.writer.append_aggregate(step, label, values, baseline=baseline)
        self.trackers.log_scalars(values, step)
        self.trackers.log_images({f"{prefix}/grid": grid}, step)
        self.history.append({"step": float(step), **values})
        if baseline or variant != self._variants(False)[0]:
            return False
        return self._decide(step, values)

    def _decide(self, step: int, values: dict[str, float]) -> bool:
        monitor = self.config.monitor
        if monitor is None:
            return False
        if monitor not in values:
            raise KeyError(f"monitor {monitor!r} was not logged; available keys: {sorted(values)}")
        score = values[monitor]
        if self.checkpoint is not None and self.checkpoint.update(score, step, self.modules):
            logger.info(
                "sdcallbacks: new best %s = %.4f at step %d -> %s",
                monitor,
                score,
                step,
                self.checkpoint.best_model_path,
            )
        if self.early_stopping is not None and self.early_stopping.check(score):
            logger.warning(
                "sdcallbacks: early stop at step %d: %s", step, self.early_stopping.stopping_message
            )
            return True
        return False

    # -- resume ----------------------------------------------------------------------------------

    @property
    def best_score(self) -> float | None:
        return self.checkpoint.best_model_score if self.checkpoint else None

    @property
    def best_step(self) -> int | None:
        return self.checkpoint.best_step if self.checkpoint else None

    @property
    def best_model_path(self) -> str | None:
        return self.checkpoint.best_model_path if self.checkpoint else None

    def state_dict(self) -> dict[str, Any]:
        return {
            "schedule": self.schedule.state_dict(),
            "baseline": {k: [r.__dict__ for r in v] for k, v in self.baseline.items()},
            "baseline_sets": self.baseline_sets,
            "checkpoint": self.checkpoint.state_dict() if self.checkpoint else None,
            "early_stopping": self.early_stopping.state_dict() if self.early_stopping else None,
            "failed_validations": self.failed_validations,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.schedule.load_state_dict(state["schedule"])
        self.baseline = {k: [ImageRecord(**r) for r in v] for k, v in state["baseline"].items()}
        self.baseline_sets = state.get("baseline_sets", {})
        if self.checkpoint and state["checkpoint"]:
            self.checkpoint.load_state_dict(state["checkpoint"])
        if self.early_stopping and state["early_stopping"]:
            self.early_stopping.load_state_dict(state["early_stopping"])
        self.failed_validations = state["failed_validations"]
