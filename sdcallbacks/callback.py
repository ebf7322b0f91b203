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

Background scoring (``scoring.mode: async``): the loop is blocked only while images are sampled (and the
weights of the step are copied, when checkpoints are kept); scoring, files, trackers and the checkpoint
decision run in a background thread of the main process, and everything is logged at the validated step.
At most one job is in flight: the next validation first waits for the previous one (``scoring.wait_s``),
so a decision reaches the loop at most one validation late. With one process it arrives sooner, at the
first ``on_step_end`` after the job finishes; with several it travels with the next validation's
broadcast (or ``on_train_end``'s). ``on_train_end`` and ``state_dict`` wait for the job, bounded by
``scoring.wait_s``. A job that raises is logged in the training process when it is collected and counts
as a failed validation; earlier records are already on disk.

Evaluators (``scoring.evaluators``): ``offload`` (the default on CUDA) moves them off the accelerator
after every validation, ``resident`` keeps them there. ``val/peak_mem_mb`` (CUDA) or ``val/rss_mb``
(CPU) record what the validation cost in memory (:class:`~sdcallbacks.runtime.MemoryMeter`).
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from sdcallbacks.aggregation.composite import ScoreWeight, composite_score
from sdcallbacks.aggregation.keys import variant_prefix
from sdcallbacks.aggregation.records import ImageRecord, aggregate, record_scores, set_values
from sdcallbacks.config.loading import ConfigError, load_config, validate_config
from sdcallbacks.config.schema import RunConfig
from sdcallbacks.metrics import BackbonePool, ImageBatch, KeySpec, Metric, build_metrics
from sdcallbacks.metrics.base import ImageMetric
from sdcallbacks.metrics.loss import ValidationLoss
from sdcallbacks.outputs.grid import prompt_grids
from sdcallbacks.outputs.writer import OutputWriter
from sdcallbacks.prompts.library import expand_jobs, load_prompts
from sdcallbacks.runtime import BackgroundJob, MemoryMeter, side_stream
from sdcallbacks.sampling.pipeline import TrainingModules
from sdcallbacks.sampling.rng import isolated_rng
from sdcallbacks.sampling.sampler import ValidationSampler, _has_adapters
from sdcallbacks.sampling.schedule import ValidationSchedule
from sdcallbacks.selection.checks import check_config, variants
from sdcallbacks.selection.monitor import Decision, Selection
from sdcallbacks.selection.snapshots import WeightsSnapshot
from sdcallbacks.trackers import TrackerLogger, ValidationLog
from sdcallbacks.trackers.logger import flatten
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


class ValidationFailed(RuntimeError):
    """A validation failed on some process; raised on every process alike."""


@dataclass
class SampledVariant:
    """One variant's images of one validation, gathered on the main process, with what the training
    thread measured while drawing them; what scoring needs, wherever it runs."""

    variant: str
    records: list[ImageRecord]
    images: list[Image.Image]
    sets: dict[str, float | None]  # what needs the live weights (val_loss): computed before handing over
    extras: dict[str, float] = field(default_factory=dict)  # time/..., memory figures


def _merged(earlier: Decision | None, later: Decision) -> Decision:
    """Two decisions not yet delivered, as one: a stop or a new best in either one is kept."""
    if earlier is None:
        return later
    return Decision(
        stop=earlier.stop or later.stop,
        new_best=earlier.new_best or later.new_best,
        best_model_path=later.best_model_path,
        stopping_reason=later.stopping_reason if later.stop else earlier.stopping_reason,
    )


def _control(decision: Decision, validated: bool = True) -> Control:
    return Control(should_validate=validated, should_stop=decision.stop, should_save=decision.new_best)


class ValidationCallback:
    def __init__(
        self,
        config: RunConfig,
        accelerator: Any = None,
        metrics: list[Metric] | None = None,
        register: bool = True,
    ):
        self.config = config
        self.accelerator = accelerator
        self.prompts = load_prompts(config)
        self.jobs = expand_jobs(self.prompts)
        self.schedule = ValidationSchedule(config.schedule)
        device = config.metrics.device or (str(accelerator.device) if accelerator is not None else "cpu")
        self.metrics_device = device
        self.metrics = (
            metrics
            if metrics is not None
            else build_metrics(
                config.metrics.enabled(), device=device, pool=BackbonePool(feature_cache_dir(config))
            )
        )
        self.val_loss = ValidationLoss(config.metrics.val_loss) if config.metrics.val_loss else None
        self.key_specs: dict[str, KeySpec] = {k: v for m in self.metrics for k, v in m.key_specs().items()}
        # Per-image score keys (the W&B table's columns): set-level keys like kid have no per-image value.
        self.image_score_keys = sorted(
            key for m in self.metrics if isinstance(m, ImageMetric) for key in m.output_keys()
        )
        check_config(config, self.metrics)  # a located config error now, not hours into training
        self.score_weights = {
            key: ScoreWeight(
                term.weight, term.mode == "max" if term.mode else self.key_specs[key].higher_is_better
            )
            for key, term in config.score_terms().items()
        }
        self.writer = OutputWriter(config.output_dir)
        self.selection = Selection(config)
        self.trackers = TrackerLogger(
            accelerator,
            config.trackers,
            monitor=config.monitor,
            mode=config.mode,
            run_config=flatten(config.model_dump(mode="json")),
            directory=str(config.output_dir),
        )
        self.modules: TrainingModules | None = None
        self.sampler: ValidationSampler | None = None
        self.baseline: dict[str, list[ImageRecord]] = {}
        self.baseline_sets: dict[str, dict[str, float | None]] = {}
        self.history: list[dict[str, float]] = []
        self.failed_validations = 0
        self.background = config.scoring.mode == "async"
        self.evaluators = config.scoring.evaluators or ("resident" if device.startswith("cpu") else "offload")
        self._pools = list({id(m.pool): m.pool for m in self.metrics if hasattr(m, "pool")}.values())
        self._pending: BackgroundJob[Decision] | None = None
        self._pending_step: int | None = None
        # A collected job's decision until a hook hands it to the loop: exactly once, whichever call
        # (on_step_end, the next validation, state_dict, on_train_end) collected the job.
        self._undelivered: Decision | None = None
        self._report_lock = threading.Lock()  # the scoring thread and the loop both write files/trackers
        self._resumed = False  # load_state_dict ran: on_train_start continues the run's outputs
        if register and accelerator is not None:
            # accelerator.save_state/load_state then carry the callback's bookkeeping.
            accelerator.register_for_checkpointing(self)

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
        self._claim_output_dir(resumed=self._resumed or global_step > 0)
        # The main process's view decides (a resumed run restores the baseline there), so all agree.
        if self.config.sampling.baseline and not self._broadcast(bool(self.baseline)):
            return self.validate(global_step, baseline=True)
        return _CONTINUE

    def _claim_output_dir(self, resumed: bool) -> None:
        """Make ``output_dir`` this run's (main process; every process raises alike): remove staging
        folders a killed save left; a new run refuses an earlier run's outputs, or deletes them with
        ``overwrite_output_dir``, so two runs' records never mix. A resumed run appends."""
        problem = None
        if self.is_main_process:
            checkpoint = self.selection.checkpoint
            if checkpoint is not None:
                checkpoint.remove_orphans()
            previous = self.writer.previous_outputs()
            previous += checkpoint.previous_checkpoints() if checkpoint is not None else []
            if previous and not resumed and self.config.overwrite_output_dir:
                logger.warning(
                    "sdcallbacks: overwrite_output_dir: deleting %s", ", ".join(map(str, previous))
                )
                for path in previous:
                    if path.is_dir():
                        shutil.rmtree(path)
                    else:
                        path.unlink()
            elif previous and not resumed:
                problem = (
                    f"output_dir: {self.config.output_dir} holds an earlier run's outputs "
                    f"({', '.join(str(p) for p in previous)}); choose another output_dir, set "
                    "overwrite_output_dir: true to delete them, or resume that run (accelerator.load_state, "
                    "or on_train_start(global_step=...)) to continue it"
                )
        problem = self._broadcast(problem)
        if problem is not None:
            raise ConfigError(self.config.source, [problem])

    def on_step_end(self, global_step: int) -> Control:
        """Call after every optimizer step. Costs microseconds unless a validation is due."""
        if self.accelerator is not None and not self.accelerator.sync_gradients:
            return _CONTINUE
        if not self.schedule.is_due(global_step):
            self._loss_between_validations(global_step)
            finished = self._pending is not None and self._pending.done()
            if (finished or self._undelivered is not None) and self._world[1] == 1:
                return self._collected_control()
            return _CONTINUE
        return self.validate(global_step)

    def _loss_between_validations(self, step: int) -> None:
        every = self.config.metrics.val_loss.every_n_steps if self.val_loss is not None else None
        if every is None or step % every or not self.is_main_process or self.sampler is None:
            return
        values = set_values(self._loss("model", step), self.baseline_sets.get(self._reference_variant()))
        with self._report_lock:
            self.writer.append_aggregate(step, "val_loss", values, baseline=False)
            self.trackers.log_scalars(values, step)

    def _reference_variant(self) -> str:
        return "base" if "base" in self.baseline else "model"

    def on_train_end(self, global_step: int | None = None) -> Control:
        """Validate the final step unless it already was (``schedule.validate_at_end``); then, with
        ``early_stopping.restore_best_at_end``, load the best checkpoint back into the model (every
        process). All processes must call it."""
        control = _CONTINUE
        if global_step is not None and self.schedule.is_due_at_end(global_step):
            control = self.validate(global_step)
        if self.background:
            control = self._finish_background(control)
        if self.modules is not None:  # every process loads the same (main-written) best weights
            self.selection.restore_best(self.modules)
        self.trackers.set_summary(self.selection.summary())
        self.trackers.finish()
        return control

    # -- one validation --------------------------------------------------------------------------

    def _variants(self, baseline: bool) -> list[str]:
        if baseline:
            return (
                ["base"]
                if self.modules is not None and any(map(_has_adapters, self.modules.torch_modules()))
                else ["model"]
            )
        return variants(self.config)

    def validate(self, global_step: int, baseline: bool = False) -> Control:
        """Run one validation now (all ranks must call it together)."""
        if self.sampler is None:
            raise RuntimeError("call on_train_start(...) before validating")
        self.schedule.mark_done(global_step)
        try:
            decision = self._validate(global_step, baseline)
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
        return _control(decision)

    def _decides(self, variant: str, baseline: bool) -> bool:
        return not baseline and variant == self._variants(False)[0]

    def _validate(self, step: int, baseline: bool) -> Decision:
        """One validation on every process. With several processes, an error on any of them is carried
        through the collectives (gather, then broadcast) instead of skipping them, so every process makes
        the same calls in the same order and then raises the same :class:`ValidationFailed`."""
        rank, world = self._world
        local_jobs = self.jobs[rank::world]  # strided split: no padding duplicates
        started = time.perf_counter()
        decision, failures, sampled = Decision(), [], []
        if self.background and self.is_main_process:
            with self._carried(failures):  # the previous job first: one in flight, decisions <= 1 late
                self._collect(wait=True)
                decision = self._take_decision() or decision
        waited = time.perf_counter() - started
        meter = MemoryMeter(self.sampler.device)
        meter.start()
        for variant in self._variants(baseline):
            records, images, extras, error = self._sample_and_score(step, variant, local_jobs, world)
            records, images, errors = self._gather(records, images, error)
            if self.is_main_process and not failures:
                with self._carried(failures):
                    if errors:
                        raise ValidationFailed("\n".join(errors))
                    part = SampledVariant(variant, records, images, self._loss(variant, step), extras)
                    if self.background:
                        part.extras.update(meter.read())
                        sampled.append(part)
                    else:
                        with isolated_rng():
                            values = self._score_and_report(step, part, baseline, meter, per_image=False)
                        if self._decides(variant, baseline):
                            decision = self._decide(step, values, self.modules)
        if sampled and not failures:
            with self._carried(failures):
                self._submit(step, baseline, sampled, blocked_since=started, waited=waited)
        # Decided once, on the main process; every process gets the same answer and the same bookkeeping
        # (best path and score, patience), so each can act on it (a collective on all processes).
        failure = failures[0] if failures else None
        decision, selection, failure = self._broadcast((decision, self.selection.state_dict(), failure))
        if failure is not None:
            raise ValidationFailed(failure)
        if not self.is_main_process:
            self.selection.load_state_dict(selection)
        return decision

    @contextmanager
    def _carried(self, failures: list[str]) -> Iterator[None]:
        """Main-process work between collectives: with one process an error propagates; with several it is
        kept in ``failures`` for the broadcast, so every process still makes the same collective calls."""
        try:
            yield
        except Exception:
            if self._world[1] == 1:
                raise
            failures.append(traceback.format_exc())

    def _sample_and_score(self, step: int, variant: str, jobs: list, world: int):
        """This process's share: images, and per-image scores unless scoring runs in the background; an
        error is returned when there are other processes to tell (they are waiting in the gather)."""
        try:
            started = time.perf_counter()
            images = self.sampler.sample(jobs, variant=variant)
            sampled = time.perf_counter()
            records = [ImageRecord.for_job(step, variant, job) for job in jobs]
            if not self.background:
                per_image = [m for m in self.metrics if not m.needs_all_images]
                with isolated_rng():  # evaluators (and their lazy loading) never move training's streams
                    self._score(per_image, ImageBatch.of(images, jobs), records, step)
                if not self.is_main_process:  # the main process still runs the set metrics
                    self._offload_evaluators()
            extras = {"time/sampling_s": sampled - started, "time/scoring_s": time.perf_counter() - sampled}
            return records, images, extras, None
        except Exception:
            if world == 1:
                raise
            return [], [], {}, f"process {self._world[0]}:\n{traceback.format_exc()}"

    def _score_and_report(
        self,
        step: int,
        part: SampledVariant,
        baseline: bool,
        meter: MemoryMeter | None,
        per_image: bool,
    ) -> dict[str, float]:
        """Score one variant's gathered images (all metrics, or only those that need every image when the
        per-image ones already ran on each process), free the evaluators, then report (main process)."""
        started = time.perf_counter()
        metrics = [m for m in self.metrics if per_image or m.needs_all_images]
        sets = self._score(metrics, ImageBatch.of(part.images, self.jobs), part.records, step)
        sets.update(part.sets)
        self._offload_evaluators()
        part.extras["time/scoring_s"] = part.extras.get("time/scoring_s", 0.0) + time.perf_counter() - started
        if meter is not None:
            part.extras.update(meter.read())
        return self._report(step, part.variant, part.records, sets, part.images, part.extras, baseline)

    def _offload_evaluators(self) -> None:
        if self.evaluators == "offload":
            for pool in self._pools:
                pool.offload()

    # -- background scoring (scoring.mode: async) -------------------------------------------------

    def _submit(
        self, step: int, baseline: bool, sampled: list[SampledVariant], blocked_since: float, waited: float
    ) -> None:
        """Hand one validation's images to a background thread (main process). ``time/blocked_s`` is how
        long the loop was held, ``time/waited_s`` the part of it spent waiting for the previous job (more
        than 0 when validations come faster than scoring)."""
        if self._pending is not None:
            raise ValidationFailed(
                f"the scoring job of step {self._pending_step} is still running after scoring.wait_s="
                f"{self.config.scoring.wait_s:g} s; step {step}'s images are not scored"
            )
        # First loads draw random numbers from the global generators: do them here, in the training
        # thread, where isolated_rng can restore them. The thread never touches those generators.
        for metric in self.metrics:
            metric.ensure_loaded()
        for pool in self._pools:
            pool.load_all()
        decides = not baseline and self.selection.checkpoint is not None and self.modules is not None
        weights = WeightsSnapshot.capture(self.modules) if decides else self.modules
        blocked = time.perf_counter() - blocked_since
        for part in sampled:
            part.extras.update({"time/blocked_s": blocked, "time/waited_s": waited})

        def job() -> Decision:
            decision = Decision()
            with side_stream(self.metrics_device):
                for part in sampled:
                    values = self._score_and_report(step, part, baseline, meter=None, per_image=True)
                    if self._decides(part.variant, baseline):
                        decision = self._decide(step, values, weights)
            return decision

        self._pending = BackgroundJob(job, name=f"sdcallbacks-scoring-step-{step}")
        self._pending_step = step

    def _collect(self, wait: bool) -> None:
        """Collect the finished background job (main process): its decision waits in ``_undelivered``
        until :meth:`_take_decision`; a failed job is logged here, in the training process, and counted.
        Nothing while it runs; ``wait`` blocks up to ``scoring.wait_s``."""
        job = self._pending
        if job is None:
            return
        if wait and not job.wait(self.config.scoring.wait_s):
            logger.error(
                "sdcallbacks: the scoring job of step %d is still running after scoring.wait_s=%g s",
                self._pending_step,
                self.config.scoring.wait_s,
            )
            return
        if not job.done():
            return
        self._pending = None
        if job.error is not None:
            self.failed_validations += 1
            if self.config.on_error == "raise":
                raise ValidationFailed(job.traceback)
            logger.error(
                "sdcallbacks: background scoring of the validation at step %d failed; training continues."
                "\n%s",
                self._pending_step,
                job.traceback,
            )
            return
        self._undelivered = _merged(self._undelivered, job.result)

    def _take_decision(self) -> Decision | None:
        """The collected decision not yet handed to the loop, once."""
        decision, self._undelivered = self._undelivered, None
        return decision

    def wait_for_scoring(self) -> Control:
        """Block until the background scoring job in flight, if any, has finished and been collected
        (``scoring.wait_s`` at most; main process); what its decision asks of the loop."""
        return self._collected_control(wait=True)

    def _collected_control(self, wait: bool = False) -> Control:
        """The finished job's decision; with one process acted on at the first step after it finished."""
        self._collect(wait=wait)
        decision = self._take_decision()
        return _CONTINUE if decision is None else _control(decision, validated=False)

    def _finish_background(self, control: Control) -> Control:
        """``on_train_end``: wait for the job in flight (bounded), then give every process its outcome."""
        decision, failures = None, []
        if self.is_main_process:
            with self._carried(failures):
                self._collect(wait=True)
            decision = self._take_decision()
        failure = failures[0] if failures else None
        decision, selection, failure = self._broadcast((decision, self.selection.state_dict(), failure))
        if not self.is_main_process:
            self.selection.load_state_dict(selection)
        if failure is not None:
            raise ValidationFailed(failure)
        if decision is None:
            return control
        return Control(
            should_validate=control.should_validate,
            should_stop=control.should_stop or decision.stop,
            should_save=control.should_save or decision.new_best,
        )

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

    def _gather(self, records: list[ImageRecord], images: list[Image.Image], error: str | None):
        """All processes' records and images (prompt-major) and errors, on the main process."""
        _, world = self._world
        if world == 1:
            return records, images, [error] if error else []
        from accelerate.utils import gather_object

        # gather_object flattens one level: gather a list holding one tuple per process.
        parts = gather_object([(records, images, error)])
        pairs = sorted(
            ((r, im) for part in parts for r, im in zip(part[0], part[1])),
            key=lambda p: (p[0].prompt_index, p[0].image_index),
        )
        return [p[0] for p in pairs], [p[1] for p in pairs], [part[2] for part in parts if part[2]]

    def _broadcast(self, value: Any) -> Any:
        """The main process's ``value`` on every process (all must call it)."""
        _, world = self._world
        if world > 1:
            from accelerate.utils import broadcast_object_list

            value = broadcast_object_list([value], from_process=0)[0]
        return value

    def _report(
        self,
        step: int,
        variant: str,
        records: list[ImageRecord],
        sets: dict[str, float | None],
        images: list[Image.Image],
        extras: dict[str, float],
        baseline: bool,
    ) -> dict[str, float]:
        """Local files, aggregates and trackers for one variant (main process); returns the aggregates."""
        with self._report_lock:  # the scoring thread and the loop both write
            label = "base" if baseline else variant
            self._write_files(step, label, records, images)
            if baseline:
                self.baseline[variant] = records
                self.baseline_sets[variant] = sets
            values = self._aggregate(records, sets, variant, baseline)
            prefix = variant_prefix(variant)
            values.update({f"{prefix}/{k}": v for k, v in extras.items()})
            self.writer.append_aggregate(step, label, values, baseline=baseline)
            self.history.append({"step": float(step), **values})
            self.trackers.log_validation(
                ValidationLog(
                    step=step,
                    prefix=prefix,
                    scalars=values,
                    prompt_grids=prompt_grids(self.jobs, images) if self.config.trackers.images else {},
                    records=records,
                    images=images,
                    score_keys=self.image_score_keys,
                )
            )
            return values

    def _write_files(
        self, step: int, label: str, records: list[ImageRecord], images: list[Image.Image]
    ) -> None:
        # Gathered records are sorted prompt-major, the order of self.jobs.
        paths = self.writer.write_images(step, label, self.jobs, images)
        self.writer.write_grid(step, label, self.jobs, images)
        for record, path in zip(records, paths):
            record.image_path = str(path)
            self.writer.append_image_record(record)

    def _aggregate(
        self, records: list[ImageRecord], sets: dict[str, float | None], variant: str, baseline: bool
    ) -> dict[str, float]:
        """Aggregates, paired deltas against the baseline, and the composite score."""
        prefix = variant_prefix(variant)
        reference_variant = self._reference_variant()
        reference = None if baseline else self.baseline.get(reference_variant)
        reference_sets = None if baseline else self.baseline_sets.get(reference_variant)
        values = aggregate(records, reference, prefix=prefix, specs=self.key_specs)
        values.update(set_values(sets, reference_sets, prefix=prefix))
        if self.score_weights:
            score = composite_score(records, records if baseline else reference or [], self.score_weights)
            values.update({f"{prefix}/{k}": v for k, v in score.items()})
        return values

    def _decide(
        self, step: int, values: dict[str, float], weights: TrainingModules | WeightsSnapshot
    ) -> Decision:
        decision = self.selection.decide(step, values, weights)
        self.trackers.set_summary(self.selection.summary())
        if decision.new_best and decision.best_model_path:
            self.trackers.log_checkpoint(
                decision.best_model_path, step, self.selection.best_model_score, self.config.monitor
            )
        return decision

    # -- resume ----------------------------------------------------------------------------------

    @property
    def best_score(self) -> float | None:
        return self.selection.best_model_score

    @property
    def best_step(self) -> int | None:
        return self.selection.best_step

    @property
    def best_model_path(self) -> str | None:
        return self.selection.best_model_path

    @property
    def stopping_reason(self) -> str:
        return self.selection.stopping_reason

    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs to continue as if it had not stopped (plain Python values). A
        background scoring job in flight is waited for first (``scoring.wait_s``), so its results are in;
        its decision is kept for the loop's next hook (and in the state, for a resumed run)."""
        if self._pending is not None:
            self._collect(wait=True)
        undelivered = asdict(self._undelivered) if self._undelivered is not None else None
        return {
            "undelivered": undelivered,
            "schedule": self.schedule.state_dict(),
            "baseline": {k: [r.__dict__ for r in v] for k, v in self.baseline.items()},
            "baseline_sets": self.baseline_sets,
            "selection": self.selection.state_dict(),
            "failed_validations": self.failed_validations,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._resumed = True
        self.schedule.load_state_dict(state["schedule"])
        self.baseline = {k: [ImageRecord(**r) for r in v] for k, v in state["baseline"].items()}
        self.baseline_sets = state.get("baseline_sets", {})
        self.selection.load_state_dict(state["selection"])
        self.failed_validations = state["failed_validations"]
        undelivered = state.get("undelivered")
        self._undelivered = Decision(**undelivered) if undelivered is not None else None
