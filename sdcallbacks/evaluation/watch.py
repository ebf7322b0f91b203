"""``sdcallbacks watch``: a sidecar beside a running trainer that scores each checkpoint it writes.

Every ``poll_s`` seconds the trainer's output folder is listed. An entry is read only once it is
complete: its files' sizes and modification times (``stat`` only, never the content) were the same over
``stable_polls`` consecutive polls, so a file still being written is never opened. Each complete
checkpoint is scored once with the validation core (:class:`~sdcallbacks.evaluation.run.Evaluator`, the
same as ``sdcallbacks evaluate``: files, trackers at the checkpoint's step, ``evaluations.jsonl`` so a
restarted watch scores nothing twice), in training order. A checkpoint rewritten in place is scored again
once it is stable; an entry that is not a checkpoint is passed over once per version.

Selection is the callback's own (:class:`~sdcallbacks.selection.Selection` on ``monitor``/``mode``):

* the ``checkpoint.save_top_k`` best are kept under ``<out>/checkpoints/step_<step>/`` as hard links (or
  copies) of the trainer's files, so the trainer's own rotation cannot delete the best;
* the early-stopping rules (``early_stopping``) are applied; when they fire, ``<out>/STOP`` is written
  (JSON: step, reason, best step, path and score), an ``early_stop`` event goes to ``metrics.jsonl``, the
  optional ``on_stop`` shell command runs (``SDCALLBACKS_STOP_STEP``, ``SDCALLBACKS_STOP_REASON`` and
  ``SDCALLBACKS_BEST_PATH`` in its environment) and watching ends. Nothing is killed unless that command
  does it.

Watching also ends after ``idle_exit_s`` seconds without a new checkpoint, and on Ctrl-C.

Under ``accelerate launch`` (or torchrun) with several processes, the main process looks at the folder and
makes every decision (what is complete, what to keep, when to stop or end), and each round scores one
checkpoint per process, as ``sdcallbacks evaluate`` does; the main process publishes them in training order.
Each process can sit on its own device, so validation never touches the training GPU.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sdcallbacks.checkpoints import (
    Checkpoint,
    CheckpointError,
    CheckpointFiles,
    checkpoint_at,
    path_state,
)
from sdcallbacks.evaluation.leaderboard import ScoredModel
from sdcallbacks.evaluation.run import Evaluator, Outcome
from sdcallbacks.selection.selection import Selection
from sdcallbacks.validation.result import ValidationResult, VariantResult

logger = logging.getLogger("sdcallbacks")

STOP_FILE = "STOP"


@dataclass
class WatchOutcome:
    reason: str  # "early_stop", "idle", "interrupted"
    scored: list[str] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    stop: dict[str, Any] | None = None  # what STOP holds, when early stopping fired


class Watcher:
    """Scores a trainer's checkpoints as they are completed (see the module docstring).

    Args:
        evaluator: the base model and validation core; its ``out`` receives everything.
        folder: the trainer's output folder (checkpoints directly inside it).
        step_pattern: ``--step-pattern``, as for ``sdcallbacks evaluate``.
        stable_polls: how many consecutive polls must see an entry unchanged before it is read.
        on_stop: a shell command run once when early stopping fires.
    """

    def __init__(
        self,
        evaluator: Evaluator,
        folder: str | Path,
        *,
        step_pattern: str | None = None,
        stable_polls: int = 2,
        on_stop: str | None = None,
    ):
        if stable_polls < 2:
            raise ValueError("stable_polls must be at least 2: one poll cannot tell a file still growing")
        self.evaluator = evaluator
        self.folder = Path(folder)
        self.step_pattern = step_pattern
        self.stable_polls = stable_polls
        self.on_stop = on_stop
        config = evaluator.config
        self.selection = Selection(config) if config.monitor is not None else None
        self.outcome = WatchOutcome(reason="")
        self._seen: dict[Path, tuple[tuple, int]] = {}  # entry -> (state, polls it has been unchanged)
        self._handled: dict[Path, tuple] = {}  # entry -> the state it was scored or passed over in
        self._skipped: dict[str, str] = {}  # path -> why it was passed over (its latest version)

    def poll(self) -> list[ScoredModel]:
        """One look at the folder: score every entry that has become complete since the last look
        (scored models on the main process; every process must call it)."""
        base = self.evaluator.base_model()
        if self.selection is not None and self.selection.baseline is None:
            self.selection.set_baseline(base.values)  # relative gates and events compare with it
        processes = self.evaluator.processes
        found = processes.broadcast(self._complete() if processes.is_main else None)
        scored: list[ScoredModel] = []
        for start in range(0, len(found), processes.world):
            if processes.broadcast(self.outcome.stop) is not None:
                break
            index = start + processes.rank
            mine = self.evaluator.compute(found[index]) if index < len(found) else None
            for outcome in processes.collect(mine):
                if outcome is not None and processes.is_main and self.outcome.stop is None:
                    model = self._accept(outcome)
                    if model is not None:
                        scored.append(model)
        if scored:
            self.evaluator.leaderboard(self.outcome.skipped)
        self.outcome.stop = processes.broadcast(self.outcome.stop)
        return scored

    def _complete(self) -> list[Checkpoint]:
        """The checkpoints that have become complete since the last look, in training order."""
        ready = []
        entries = sorted(self.folder.iterdir()) if self.folder.is_dir() else []
        for path in entries:
            if path.name.startswith("."):  # staging files and folders (ours, accelerate's, editors')
                continue
            state = path_state(path)
            previous, polls = self._seen.get(path, ((), 0))
            polls = polls + 1 if state and state == previous else (1 if state else 0)
            self._seen[path] = (state, polls)
            if polls >= self.stable_polls and self._handled.get(path) != state:
                ready.append((path, state))
        found: list[Checkpoint] = []
        for path, state in ready:
            self._handled[path] = state
            checkpoint = checkpoint_at(path, self.step_pattern)
            if isinstance(checkpoint, str):
                self._skip(path, checkpoint)
            else:
                found.append(checkpoint)
        return sorted(found, key=lambda c: c.position)

    def _accept(self, outcome: Outcome) -> ScoredModel | None:
        """Publish one scored checkpoint and decide on it (main process); None when it was skipped."""
        checkpoint = outcome.checkpoint
        try:
            model = self.evaluator.accept(outcome)
        except CheckpointError as err:
            logger.warning("sdcallbacks: skipped %s", err)
            self._skip(checkpoint.path, str(err))
            return None
        self.outcome.scored.append(checkpoint.name)
        self._skipped.pop(str(checkpoint.path), None)
        logger.info("sdcallbacks: scored %s (%s %d)", checkpoint.name, checkpoint.unit, checkpoint.position)
        self._decide(checkpoint, model)
        return model

    def run(
        self,
        poll_s: float = 30.0,
        idle_exit_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> WatchOutcome:
        """Poll until early stopping fires or ``idle_exit_s`` pass without a new checkpoint (Ctrl-C raises
        ``KeyboardInterrupt``; everything scored so far is kept). The trackers are closed at the end."""
        processes = self.evaluator.processes
        try:
            self.evaluator.base_model()  # scored before the idle clock starts
            last_new = clock()
            while True:
                if self.poll():
                    last_new = clock()
                reason = None  # the main process's clock and decisions end every process's loop
                if self.outcome.stop is not None:
                    reason = "early_stop"
                elif idle_exit_s is not None and clock() - last_new >= idle_exit_s:
                    reason = "idle"
                reason = processes.broadcast(reason)
                if reason is not None:
                    self.outcome.reason = reason
                    break
                sleep(poll_s)
        except KeyboardInterrupt:
            self.outcome.reason = "interrupted"
            raise
        finally:
            if processes.is_main:
                self.evaluator.finish(self.selection.summary() if self.selection else {})
        return self.outcome

    def _skip(self, path: Path, reason: str) -> None:
        self._skipped[str(path)] = reason
        self.outcome.skipped = [{"path": p, "reason": why} for p, why in self._skipped.items()]

    def _decide(self, checkpoint: Checkpoint, model: ScoredModel) -> None:
        if self.selection is None:
            return
        step = checkpoint.position
        result = ValidationResult(
            step, False, [VariantResult("model", "model", model.records, [], [], model.sets, model.values)]
        )
        try:
            decision = self.selection.decide(result, CheckpointFiles(checkpoint))
        except OSError as err:  # rotated away before it could be linked
            logger.warning("sdcallbacks: could not keep a copy of %s: %s", checkpoint.path, err)
            return
        self.evaluator.publisher.publish_decision(decision, self.selection, step)
        if decision.stop:
            self._stop(step, decision.stopping_reason)

    def _stop(self, step: int, reason: str) -> None:
        stop = {
            "step": step,
            "reason": reason,
            "best_step": self.selection.best_step,
            "best_path": self.selection.best_model_path,
            "best_score": self.selection.best_model_score,
            "monitor": self.selection.monitor,
        }
        self.outcome.stop = stop
        out = self.evaluator.out
        (out / STOP_FILE).write_text(json.dumps(stop, indent=2) + "\n", encoding="utf-8")
        self.evaluator.publisher.writer.append_event(
            step, "early_stop", **{k: v for k, v in stop.items() if k != "step"}
        )
        logger.warning("sdcallbacks: early stop at step %d (%s); wrote %s", step, reason, out / STOP_FILE)
        if self.on_stop:
            env = {
                **os.environ,
                "SDCALLBACKS_STOP_STEP": str(step),
                "SDCALLBACKS_STOP_REASON": reason,
                "SDCALLBACKS_BEST_PATH": stop["best_path"] or "",
            }
            done = subprocess.run(self.on_stop, shell=True, env=env, check=False)
            logger.warning("sdcallbacks: --on-stop command exited with %d", done.returncode)
            stop["on_stop_exit_code"] = done.returncode
