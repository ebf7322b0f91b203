"""The validation core: one validation of the weights in hand, and nothing about hooks, threads or ranks.

:class:`Validation` holds the components (the prompt jobs, a sampler over the live modules, the metrics,
an optional ``val_loss``, the baseline to compare with) and runs one validation as a linear sequence of
stages, the way a diffusers pipeline's ``__call__`` does::

    variants = plan(baseline)                  # model / ema / base weights (sampling.variants)
    for each variant:
        drawn = draw(step, variant)            # sample every job's image; per-image scores
        drawn.sets += loss(step, variant)      # val_loss, which needs the live weights
    result = finish(step, drawn, baseline)     # set-level metrics; aggregates, deltas and val/score
                                               # against the baseline; a baseline validation is stored

``validation(step)`` runs them in order in the calling process. The execution strategies
(:mod:`sdcallbacks.execution`) call the same stages apart: several processes each ``draw`` their share
of the jobs and the main process ``finish``-es the gathered images; background scoring draws in the
training thread and finishes in a scoring thread. :func:`validate` is the one-call form for code that
has modules and prompts and wants the records: ``sdcallbacks evaluate`` over saved checkpoints, a
notebook.

A metric that raises loses only its own scores (``on_error: warn``; ``raise`` re-raises).
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Sequence
from typing import Any

from sdcallbacks.aggregation.composite import ScoreWeight, composite_score, fbeta_score
from sdcallbacks.aggregation.keys import variant_prefix
from sdcallbacks.aggregation.records import ImageRecord, aggregate, set_values
from sdcallbacks.metrics import BackbonePool, ImageBatch, ImageMetric, KeySpec, Metric
from sdcallbacks.metrics.loss import ValidationLoss
from sdcallbacks.prompts.library import ImageJob, PromptSpec, expand_jobs
from sdcallbacks.sampling.modules import TrainingModules
from sdcallbacks.sampling.rng import isolated_rng
from sdcallbacks.sampling.sampler import ValidationSampler
from sdcallbacks.sampling.variants import planned_variants
from sdcallbacks.validation.baseline import Baseline
from sdcallbacks.validation.result import DrawnVariant, ValidationResult, VariantResult
from sdcallbacks.validation.scores import record_scores

logger = logging.getLogger("sdcallbacks")


class Validation:
    """One validation's components; call it (or its stages) once per validation.

    Args:
        jobs: the (prompt, seed) images of every validation, in grid order.
        metrics: the metrics that score them.
        sampler: draws the images from the live modules (set before the first validation).
        val_loss: held-out denoising loss of the weights, or None.
        ema: ``sampling.ema``: which variants a validation draws (``none``, ``ema``, ``both``).
        score_weights: the composite ``val/score``'s terms (key -> weight and direction).
        on_error: ``warn`` (a failing metric loses its scores) or ``raise``.
        backbones: ``offload`` (moved off the accelerator after each validation) or ``resident``.
    """

    def __init__(
        self,
        jobs: Sequence[ImageJob],
        metrics: Sequence[Metric],
        sampler: ValidationSampler | None = None,
        *,
        val_loss: ValidationLoss | None = None,
        ema: str = "none",
        lora_scales: Sequence[float] = (),
        score_weights: dict[str, ScoreWeight] | None = None,
        score_beta: float | None = None,
        on_error: str = "warn",
        backbones: str = "resident",
    ):
        self.jobs = list(jobs)
        self.metrics = list(metrics)
        self.sampler = sampler
        self.val_loss = val_loss
        self.ema = ema
        self.lora_scales = list(lora_scales)
        self.score_weights = score_weights or {}
        self.score_beta = score_beta  # set: val/score is F_beta of the two score keys (fidelity first)
        self.on_error = on_error
        self.backbones = backbones
        self.baseline = Baseline()
        self.key_specs: dict[str, KeySpec] = {k: v for m in self.metrics for k, v in m.key_specs().items()}

    @property
    def image_score_keys(self) -> list[str]:
        """Per-image score keys (a results table's columns); set-level keys have no per-image value."""
        return sorted(key for m in self.metrics if isinstance(m, ImageMetric) for key in m.output_keys())

    @property
    def pools(self) -> list[BackbonePool]:
        """The backbone pools the metrics share (usually one)."""
        return list({id(m.pool): m.pool for m in self.metrics}.values())

    # -- the stages, in order ---------------------------------------------------------------------

    def plan(self, baseline: bool = False) -> list[str]:
        """The variants this validation draws (:func:`~sdcallbacks.sampling.variants.planned_variants`)."""
        modules = self.sampler.modules if self.sampler else None
        return planned_variants(self.ema, baseline, modules, self.lora_scales)

    def draw(
        self, step: int, variant: str, jobs: Sequence[ImageJob] | None = None, *, score: bool = True
    ) -> DrawnVariant:
        """The images of ``jobs`` (all of them by default) from ``variant``'s weights, with per-image
        scores unless ``score`` is off (they are then computed by :meth:`finish`)."""
        if self.sampler is None:
            raise RuntimeError("Validation.sampler is not set: the modules to draw from are unknown")
        jobs = self.jobs if jobs is None else list(jobs)
        started = time.perf_counter()
        images = self.sampler.sample(jobs, variant=variant)
        sampled = time.perf_counter()
        records = [ImageRecord.for_job(step, variant, job) for job in jobs]
        if score:
            per_image = [m for m in self.metrics if not m.needs_all_images]
            with isolated_rng():  # backbones (and their lazy loading) never move training's streams
                self._score(per_image, ImageBatch.of(images, jobs), records, step)
        costs = {"time/sampling_s": sampled - started, "time/scoring_s": time.perf_counter() - sampled}
        return DrawnVariant(variant, records, images, jobs, scored=score, costs=costs)

    def loss(self, step: int, variant: str = "model") -> dict[str, float | None]:
        """``val_loss`` of ``variant``'s weights (empty without ``val_loss``); it needs the live weights,
        so it runs where they are, before images are handed to another thread."""
        if self.val_loss is None:
            return {}
        try:
            with self.sampler.variant_weights(variant):
                return self.val_loss.evaluate(
                    self.sampler.modules, self.sampler.device, self.sampler.mixed_precision
                )
        except Exception:
            if self.on_error == "raise":
                raise
            logger.error("sdcallbacks: val_loss failed at step %d.\n%s", step, traceback.format_exc())
            return {self.val_loss.name: None}

    def loss_values(self, step: int) -> dict[str, float]:
        """``val/val_loss...`` of the model's weights now, with deltas against the baseline (a loss
        between validations, ``val_loss.every_n_steps``)."""
        return set_values(self.loss(step), self.baseline.reference()[1])

    def finish(self, step: int, drawn: Sequence[DrawnVariant], baseline: bool = False) -> ValidationResult:
        """Score what :meth:`draw` left (set-level metrics, or all when unscored) and aggregate each variant
        against the baseline; a baseline validation becomes the baseline."""
        variants = []
        for part in drawn:
            started = time.perf_counter()
            metrics = [m for m in self.metrics if m.needs_all_images or not part.scored]
            sets = self._score(metrics, ImageBatch.of(part.images, part.jobs), part.records, step)
            sets.update(part.sets)
            scoring_s = part.costs.get("time/scoring_s", 0.0) + time.perf_counter() - started
            part.costs["time/scoring_s"] = scoring_s
            if baseline:
                self.baseline.store(part.variant, part.records, sets)
            label = "base" if baseline else part.variant
            values = self._aggregate(part.records, sets, part.variant, baseline)
            result = VariantResult(part.variant, label, part.records, part.images, part.jobs, sets, values)
            result.add_costs(part.costs)
            variants.append(result)
        return ValidationResult(step, baseline, variants)

    def __call__(self, step: int, baseline: bool = False) -> ValidationResult:
        """One validation in this process, every stage in order."""
        drawn = []
        for variant in self.plan(baseline):
            part = self.draw(step, variant)
            part.sets.update(self.loss(step, variant))
            drawn.append(part)
        with isolated_rng():
            result = self.finish(step, drawn, baseline)
        self.release()
        return result

    # -- resources --------------------------------------------------------------------------------

    def load(self) -> None:
        """Load every metric and backbone now. A first load draws from the global random generators, so
        background scoring loads here, in the training thread, where they are restored."""
        for metric in self.metrics:
            metric.ensure_loaded()
        for pool in self.pools:
            pool.load_all()

    def release(self) -> None:
        """Move the backbones off the accelerator (``backbones: offload``)."""
        if self.backbones == "offload":
            for pool in self.pools:
                pool.offload()

    # -- inside the stages ------------------------------------------------------------------------

    def _score(
        self, metrics: list[Metric], batch: ImageBatch, records: list[ImageRecord], step: int
    ) -> dict[str, float | None]:
        def on_failure(metric: Metric) -> None:
            if self.on_error == "raise":
                raise
            logger.error(
                "sdcallbacks: metric %r failed at step %d; its scores are missing.\n%s",
                metric.name,
                step,
                traceback.format_exc(),
            )

        return record_scores(metrics, batch, records, on_failure)

    def _aggregate(
        self, records: list[ImageRecord], sets: dict[str, float | None], variant: str, baseline: bool
    ) -> dict[str, float]:
        """Aggregates, paired deltas against the baseline, and the composite score."""
        prefix = variant_prefix(variant)
        reference, reference_sets = (None, None) if baseline else self.baseline.reference()
        values = aggregate(records, reference, prefix=prefix, specs=self.key_specs)
        values.update(set_values(sets, reference_sets, prefix=prefix))
        if self.score_weights:
            if self.score_beta is not None:
                score = fbeta_score(records, list(self.score_weights), self.score_beta)
            else:
                score = composite_score(records, records if baseline else reference or [], self.score_weights)
            values.update({f"{prefix}/{k}": v for k, v in score.items()})
        return values


def validate(
    modules: TrainingModules,
    prompts: Sequence[PromptSpec],
    metrics: Sequence[Metric],
    step: int = 0,
    *,
    baseline: bool = False,
    scheduler: str = "auto",
    batch_size: int = 4,
    device: Any = None,
    mixed_precision: str = "no",
    **options: Any,
) -> ValidationResult:
    """One validation of ``modules``' weights: every prompt's images drawn and scored by ``metrics``.

    ``prompts`` come from :func:`~sdcallbacks.prompts.load_prompts` (a run config) or are built as
    :class:`~sdcallbacks.prompts.PromptSpec`; ``metrics`` from :func:`~sdcallbacks.metrics.build_metrics`.
    ``options`` are :class:`Validation`'s (``ema``, ``val_loss``, ``score_weights``, ``on_error``). The
    training state of ``modules`` (RNG streams, train/eval flags, dtypes, scheduler) is left as it was.
    """
    sampler = ValidationSampler(
        modules, scheduler=scheduler, batch_size=batch_size, device=device, mixed_precision=mixed_precision
    )
    return Validation(expand_jobs(list(prompts)), metrics, sampler, **options)(step, baseline=baseline)
