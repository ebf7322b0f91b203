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

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from sdcallbacks.checkpoints import (
    Checkpoint,
    CheckpointError,
    CheckpointSwap,
    content_hash,
    files_sha256,
    find_checkpoints,
    load_base_pipeline,
    path_state,
)
from sdcallbacks.config.loading import ConfigError
from sdcallbacks.config.schema import RunConfig
from sdcallbacks.evaluation.leaderboard import LEADERBOARD_FILES, Leaderboard, ScoredModel, build_leaderboard
from sdcallbacks.evaluation.store import ScoredStore, scoring_hash
from sdcallbacks.execution.assemble import build_publisher, build_sampler, build_validation, family_problems
from sdcallbacks.execution.processes import Processes
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


@dataclass
class Outcome:
    """One checkpoint's turn: its scores (``result`` when computed now, for publishing), or why not."""

    checkpoint: Checkpoint
    content: str | None
    model: ScoredModel | None
    result: ValidationResult | None = None
    reused: bool = False
    error: str | None = None


class _Scorer:
    """The base pipeline and the validation core, built on first use (a fully resumed evaluation loads
    nothing)."""

    def __init__(
        self,
        config: RunConfig,
        base: str,
        base_config: str | None,
        device: str,
        dtype: str,
        mixed_precision: str,
    ):
        self.config, self.base, self.base_config = config, base, base_config
        self.device, self.dtype, self.mixed_precision = device, dtype, mixed_precision
        self.validation = build_validation(config, device=config.metrics.device or device)
        self.publisher = build_publisher(config, self.validation)
        self.swap: CheckpointSwap | None = None

    def _load(self) -> CheckpointSwap:
        if self.swap is None:
            pipeline = load_base_pipeline(self.base, self.dtype, self.base_config).to(self.device)
            modules = TrainingModules.from_components(pipeline.components)
            family = resolve_family(modules, self.config.sampling.family)
            problems = family_problems(self.config, family, modules, self.validation)
            if problems:
                raise ConfigError(self.config.source, problems)
            self.validation.sampler = build_sampler(
                self.config, modules, device=self.device, mixed_precision=self.mixed_precision
            )
            self.swap = CheckpointSwap(pipeline, modules, self.base)
            # The base model in every image's parameters; a web UI finds a single-file model by its hash.
            single = Path(self.base).is_file()
            self.publisher.writer.model = {"Model": Path(self.base).stem if single else self.base}
            if single:
                self.publisher.writer.model["Model_hash"] = files_sha256([Path(self.base)])[:10]
        return self.swap

    def base_model(self) -> ValidationResult:
        self._load()
        return self.validation(0, baseline=True)

    def checkpoint(self, checkpoint: Checkpoint) -> ValidationResult:
        swap = self._load()
        with swap.applied(checkpoint):
            result = self.validation(checkpoint.position)
        result.weights = checkpoint.path.name
        return result


def _scored(
    name: str, kind: str, path: str | None, checkpoint: Checkpoint | None, result: ValidationResult
) -> ScoredModel:
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


class Evaluator:
    """The base model and then checkpoints, scored one at a time against it, resumably; what
    :func:`evaluate` runs over a list and ``sdcallbacks watch`` over a folder as it fills.

    Args:
        config: the run config (prompts, sampling, metrics, monitor); its ``output_dir`` becomes ``out``.
        base: the base model, a diffusers folder, a hub id or a single ``.safetensors``/``.ckpt`` file.
        base_config: for a single-file ``base``, a local diffusers folder of its architecture (offline,
            diffusers otherwise needs the configs of the model type's hub repo in the Hugging Face cache).
        out: where ``evaluations.jsonl``, ``samples/``, ``metrics.jsonl`` and the leaderboard go.
        device: where the base pipeline samples (default CUDA if available); ``dtype`` of its weights;
            ``mixed_precision`` of sampling's autocast.
    """

    def __init__(
        self,
        config: RunConfig,
        base: str,
        out: str | Path,
        *,
        base_config: str | None = None,
        device: str | None = None,
        dtype: str = "float32",
        mixed_precision: str = "no",
        processes: Processes | None = None,
    ):
        self.processes = processes or Processes()
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.base = base
        state = self.processes.accelerator
        device = device or (str(state.device) if state is not None else None)
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        # One weights source at a time: EMA variants belong to a training run, not to a saved checkpoint.
        sampling = config.sampling.model_copy(update={"ema": "none"})
        self.config = config.model_copy(update={"output_dir": self.out, "sampling": sampling})
        digest = scoring_hash(
            self.config,
            base=base,
            base_config=base_config,
            dtype=dtype,
            mixed_precision=mixed_precision,
            device=torch.device(device).type,
        )
        self.store = ScoredStore(self.out / STORE_FILE, digest)
        self.scorer = _Scorer(self.config, base, base_config, device, dtype, mixed_precision)
        self.publisher = self.scorer.publisher  # files and trackers, shared with watch's decisions
        self.models: list[ScoredModel] = []  # the base first, then checkpoints as scored
        self.scored: list[str] = []
        self.reused: list[str] = []

    def base_model(self) -> ScoredModel:
        """The base model's scores (computed once, or read back), and the baseline of every checkpoint.
        With several processes the main one scores it and the others receive its records."""
        if self.models:
            return self.models[0]
        key = f"base:{self.base}"
        model = self.store.get(key)
        failures: list[str] = []
        if model is None and self.processes.is_main:
            with self.processes.carried(failures):
                result = self.scorer.base_model()
                self.publisher.publish(result)
                model = _scored("base", "base", self.base, None, result)
                self.store.add(key, model)
                self.scored.append("base")
        elif model is not None:
            self.reused.append("base")
        model, failures = self.processes.broadcast((model, failures))
        if failures:
            raise RuntimeError("the base model could not be scored:\n" + "\n".join(failures))
        self.scorer.validation.baseline.store("model", model.records, model.sets)
        self.models.append(model)
        return model

    def compute(self, checkpoint: Checkpoint) -> Outcome:
        """``checkpoint`` scored in this process, or its scores read back when its content was scored
        before with this config; nothing is written (:meth:`accept` does that, on the main process)."""
        self.base_model()
        try:
            content = content_hash(checkpoint)
            cached = self.store.get(content)
            if cached is not None:
                return Outcome(checkpoint, content, _renamed(cached, checkpoint), reused=True)
            before = path_state(checkpoint.path)  # a rotated or rewritten checkpoint changes it
            result = self.scorer.checkpoint(checkpoint)
            if path_state(checkpoint.path) != before:
                raise CheckpointError(f"{checkpoint.path}: removed or rewritten while it was being scored")
        except CheckpointError as err:
            return Outcome(checkpoint, None, None, error=str(err))
        model = _scored(checkpoint.name, checkpoint.kind, str(checkpoint.path), checkpoint, result)
        return Outcome(checkpoint, content, model, result=result)

    def accept(self, outcome: Outcome) -> ScoredModel:
        """Publish and store a computed checkpoint (main process); a skipped one raises its
        :class:`CheckpointError`."""
        if outcome.error is not None:
            raise CheckpointError(outcome.error)
        if outcome.reused:
            self.reused.append(outcome.checkpoint.name)
        else:
            self.publisher.publish(outcome.result)
            self.store.add(outcome.content, outcome.model)
            self.scored.append(outcome.checkpoint.name)
        self.models.append(outcome.model)
        return outcome.model

    def score(self, checkpoint: Checkpoint) -> ScoredModel:
        """``checkpoint``'s scores, computed and published, or read back (one process). A
        :class:`CheckpointError` when it cannot be scored (nothing written)."""
        return self.accept(self.compute(checkpoint))

    def leaderboard(self, skipped: list[dict[str, str]]) -> Leaderboard:
        """The leaderboard of every model so far (checkpoints in training order), written to ``out``."""
        checkpoints = sorted(self.models[1:], key=lambda m: m.position)
        board = build_leaderboard(
            self.models[:1] + checkpoints,
            self.scorer.validation.key_specs,
            self.config.monitor,
            self.config.mode,
            skipped=skipped,
            seed=self.config.seed if isinstance(self.config.seed, int) else 0,
        )
        board.write(self.out)
        return board

    def finish(self, summary: dict[str, Any]) -> None:
        """The trackers' run summary, then they close."""
        self.publisher.finish(summary)


def evaluate(
    config: RunConfig,
    base: str,
    sources: list[str | Path],
    out: str | Path,
    *,
    base_config: str | None = None,
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
    processes = launched_processes(device)
    discovery = find_checkpoints(list(sources), step_pattern)
    evaluator = Evaluator(
        config,
        base,
        out,
        base_config=base_config,
        device=device,
        dtype=dtype,
        mixed_precision=mixed_precision,
        processes=processes,
    )
    skipped = [{"path": str(p), "reason": why} for p, why in discovery.skipped]
    evaluator.base_model()
    checkpoints = discovery.checkpoints
    # In rounds of one checkpoint per process: each process scores its own, the main process publishes
    # them all in training order (the images of one round travel, not of the whole evaluation).
    rounds = range(0, len(checkpoints), processes.world)
    bar = tqdm(
        rounds,
        desc="checkpoints",
        unit=f"x{processes.world} ckpt" if processes.world > 1 else "ckpt",
        disable=not (progress and processes.is_main),
        dynamic_ncols=True,
    )
    for start in bar:
        index = start + processes.rank
        mine = evaluator.compute(checkpoints[index]) if index < len(checkpoints) else None
        for outcome in processes.collect(mine):
            if outcome is None or not processes.is_main:
                continue
            bar.set_postfix_str(outcome.checkpoint.name, refresh=False)
            try:
                evaluator.accept(outcome)
            except CheckpointError as err:
                logger.warning("sdcallbacks: skipped %s", err)
                skipped.append({"path": str(outcome.checkpoint.path), "reason": str(err)})
    files = {kind: evaluator.out / name for kind, name in LEADERBOARD_FILES.items()}
    board = None
    if processes.is_main:
        board = evaluator.leaderboard(skipped)
        evaluator.finish(board.summary())
    board = processes.broadcast(board)
    return EvaluationResult(board, files, evaluator.scored, evaluator.reused, skipped)


def launched_processes(device: str | None = None) -> Processes:
    """The processes ``accelerate launch`` or torchrun started (one when run plainly); on the CPU (gloo)
    when ``device`` is a CPU or there is no GPU."""
    return Processes(
        _distributed_state(cpu=(device or "").startswith("cpu") or not torch.cuda.is_available())
    )


def _distributed_state(cpu: bool) -> Any:
    """accelerate's process state when launched on several processes (``accelerate launch``, torchrun),
    else None. ``cpu``: processes on the CPU (gloo), which accelerate only sets up when told."""
    import os

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    from accelerate import PartialState

    return PartialState(cpu=cpu)


def _renamed(model: ScoredModel, checkpoint: Checkpoint) -> ScoredModel:
    """A reused model under the name and place it has now (the same content may have moved)."""
    return dataclasses.replace(
        model,
        name=checkpoint.name,
        kind=checkpoint.kind,
        path=str(checkpoint.path),
        step=checkpoint.step,
        epoch=checkpoint.epoch,
    )
