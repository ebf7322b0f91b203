"""``evaluate``: score the base model and every saved checkpoint of a run with the validation core.

The same prompts, seeds, metrics and aggregates as the callback, written to the same files
(``samples/``, ``metrics.jsonl``) and trackers; only the source of the weights differs. The base pipeline
is loaded once and each checkpoint is swapped in and out (:class:`~sdcallbacks.checkpoints.CheckpointSwap`).
The base model is the baseline every checkpoint is compared with (``/delta``, ``val/score``, ``z/``).

A checkpoint that cannot be scored (it does not load, it was rotated away or rewritten while being scored)
is skipped and listed with the reason; nothing of it is written. Scores already in ``evaluations.jsonl``
for the same config and content are reused (:mod:`.store`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from sdcallbacks.checkpoints import (
    Checkpoint,
    CheckpointError,
    CheckpointSwap,
    content_hash,
    file_state,
    find_checkpoints,
    load_base_pipeline,
)
from sdcallbacks.config.loading import ConfigError
from sdcallbacks.config.schema import RunConfig
from sdcallbacks.evaluation.leaderboard import Leaderboard, ScoredModel, build_leaderboard
from sdcallbacks.evaluation.store import ScoredStore, scoring_hash
from sdcallbacks.execution.assemble import build_publisher, build_sampler, build_validation, family_problems
from sdcallbacks.sampling.families import resolve_family
from sdcallbacks.sampling.modules import TrainingModules
from sdcallbacks.validation.result import ValidationResult

logger = logging.getLogger("sdcallbacks")

STORE_FILE = "evaluations.jsonl"


@dataclass
class EvaluationResult:
    leaderboard: Leaderboard
    files: dict[str, Path]
    scored: list[str] = field(default_factory=list)  # names scored in this run
    reused: list[str] = field(default_factory=list)  # names whose scores came from evaluations.jsonl
    skipped: list[dict[str, str]] = field(default_factory=list)  # {"path", "reason"}


class _Scorer:
    """The base pipeline and the validation core, built on first use (a fully resumed evaluation loads
    nothing)."""

    def __init__(self, config: RunConfig, base: str, device: str, dtype: str, mixed_precision: str):
        self.config, self.base = config, base
        self.device, self.dtype, self.mixed_precision = device, dtype, mixed_precision
        self.validation = build_validation(config, device=config.metrics.device or device)
        self.publisher = build_publisher(config, self.validation)
        self.swap: CheckpointSwap | None = None

    def _load(self) -> CheckpointSwap:
        if self.swap is None:
            pipeline = load_base_pipeline(self.base, self.dtype).to(self.device)
            modules = TrainingModules.from_components(pipeline.components)
            family = resolve_family(modules, self.config.sampling.family)
            problems = family_problems(self.config, family, modules, self.validation)
            if problems:
                raise ConfigError(self.config.source, problems)
            self.validation.sampler = build_sampler(
                self.config, modules, device=self.device, mixed_precision=self.mixed_precision
            )
            self.swap = CheckpointSwap(pipeline, modules, self.base)
        return self.swap

    def base_model(self) -> ValidationResult:
        self._load()
        return self.validation(0, baseline=True)

    def checkpoint(self, checkpoint: Checkpoint) -> ValidationResult:
        swap = self._load()
        with swap.applied(checkpoint):
            return self.validation(checkpoint.position)


def _scored(name: str, kind: str, path: str | None, checkpoint: Checkpoint | None, result: ValidationResult):
    part = result.variants[0]
    return ScoredModel(
        name=name,
        kind=kind,
        path=path,
        step=checkpoint.step if checkpoint else None,
        epoch=checkpoint.epoch if checkpoint else None,
        values=part.values,
        records=part.records,
        sets=part.sets,
    )


def evaluate(
    config: RunConfig,
    base: str,
    sources: list[str | Path],
    out: str | Path,
    *,
    step_pattern: str | None = None,
    device: str | None = None,
    dtype: str = "float32",
    mixed_precision: str = "no",
    progress: bool = False,
) -> EvaluationResult:
    """Score ``base`` and every checkpoint in ``sources`` with ``config``; write the leaderboard to ``out``.

    Raises :class:`~sdcallbacks.checkpoints.CheckpointError` when ``sources`` hold no checkpoint or
    ``base`` does not load, and :class:`~sdcallbacks.config.ConfigError` for a config the base model's
    family cannot run. Checkpoints that fail one by one are skipped (``EvaluationResult.skipped``).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    discovery = find_checkpoints(list(sources), step_pattern)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    # One weights source at a time: EMA variants belong to a training run, not to a saved checkpoint.
    sampling = config.sampling.model_copy(update={"ema": "none"})
    config = config.model_copy(update={"output_dir": out, "sampling": sampling})
    store = ScoredStore(
        out / STORE_FILE,
        scoring_hash(
            config, base=base, dtype=dtype, mixed_precision=mixed_precision, device=torch.device(device).type
        ),
    )
    scorer = _Scorer(config, base, device, dtype, mixed_precision)
    result = EvaluationResult(leaderboard=None, files={})  # type: ignore[arg-type]
    result.skipped = [{"path": str(p), "reason": why} for p, why in discovery.skipped]

    base_key = f"base:{base}"
    base_model = store.get(base_key)
    if base_model is None:
        scored = scorer.base_model()
        scorer.publisher.publish(scored)
        base_model = _scored("base", "base", base, None, scored)
        store.add(base_key, base_model)
        result.scored.append("base")
    else:
        result.reused.append("base")
    scorer.validation.baseline.store("model", base_model.records, base_model.sets)

    models = [base_model]
    bar = tqdm(
        discovery.checkpoints, desc="checkpoints", unit="ckpt", disable=not progress, dynamic_ncols=True
    )
    for checkpoint in bar:
        bar.set_postfix_str(checkpoint.name, refresh=False)
        try:
            model = _evaluate_one(scorer, store, checkpoint, result)
        except CheckpointError as err:
            logger.warning("sdcallbacks: skipped %s", err)
            result.skipped.append({"path": str(checkpoint.path), "reason": str(err)})
            continue
        models.append(model)

    result.leaderboard = build_leaderboard(
        models,
        scorer.validation.key_specs,
        config.monitor,
        config.mode,
        skipped=result.skipped,
        seed=config.seed if isinstance(config.seed, int) else 0,
    )
    result.files = result.leaderboard.write(out)
    scorer.publisher.finish(result.leaderboard.summary())
    return result


def _evaluate_one(
    scorer: _Scorer, store: ScoredStore, checkpoint: Checkpoint, result: EvaluationResult
) -> ScoredModel:
    content = content_hash(checkpoint)
    cached = store.get(content)
    if cached is not None:
        result.reused.append(checkpoint.name)
        return _renamed(cached, checkpoint)
    before = file_state(checkpoint)
    scored = scorer.checkpoint(checkpoint)
    if file_state(checkpoint) != before:
        raise CheckpointError(f"{checkpoint.path}: removed or rewritten while it was being scored")
    scorer.publisher.publish(scored)
    model = _scored(checkpoint.name, checkpoint.kind, str(checkpoint.path), checkpoint, scored)
    store.add(content, model)
    result.scored.append(checkpoint.name)
    return model


def _renamed(model: ScoredModel, checkpoint: Checkpoint) -> ScoredModel:
    """A reused model under the name and place it has now (the same content may have moved)."""
    return ScoredModel(
        name=checkpoint.name,
        kind=checkpoint.kind,
        path=str(checkpoint.path),
        step=checkpoint.step,
        epoch=checkpoint.epoch,
        values=model.values,
        records=model.records,
        sets=model.sets,
    )
