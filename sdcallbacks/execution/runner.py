"""``ValidationRunner``: one validation of a training run, across its processes, with its scoring mode.

The validation core (:class:`~sdcallbacks.validation.Validation`) knows neither ranks nor threads; the
runner puts its stages where they run::

    previous = scoring.collect(), scoring.take()   # background: the task in flight first (main)
    for each variant of the plan:
        share = validation.draw(step, variant, processes.share(jobs))   # every process
        drawn = processes.gather(share)                                 # main
        drawn.sets += validation.loss(step, variant)                    # main, live weights
    decision = scoring.handle(step, drawn, ...)     # sync: finish, report, decide now (main)
                                                    # async: the same in a thread; decided later
    decision, selection = processes.broadcast(...)  # every process acts on the same decision

A failed validation is counted and logged and training goes on (``on_error: warn``); ``raise``
re-raises. A failing metric only loses its own scores (the core); a failing tracker never raises
(:class:`~sdcallbacks.trackers.TrackerLogger`).
"""

from __future__ import annotations

import logging
import time
import traceback
from typing import Any

from sdcallbacks.execution.background import BackgroundScoring, merged
from sdcallbacks.execution.processes import Processes, ValidationFailed
from sdcallbacks.execution.publish import Publisher
from sdcallbacks.execution.synchronous import SynchronousScoring
from sdcallbacks.outputs.claim import claim_output_dir
from sdcallbacks.runtime import MemoryMeter
from sdcallbacks.sampling.modules import TrainingModules
from sdcallbacks.selection.selection import Decision, Selection
from sdcallbacks.selection.snapshots import WeightsSnapshot
from sdcallbacks.validation.core import Validation
from sdcallbacks.validation.result import ValidationResult

logger = logging.getLogger("sdcallbacks")


class ValidationRunner:
    def __init__(
        self,
        validation: Validation,
        selection: Selection,
        publisher: Publisher,
        processes: Processes,
        *,
        mode: str = "sync",
        wait_s: float = 600.0,
        on_error: str = "warn",
        device: Any = None,
    ):
        self.validation = validation
        self.selection = selection
        self.publisher = publisher
        self.processes = processes
        self.on_error = on_error
        self.scoring: SynchronousScoring | BackgroundScoring = (
            BackgroundScoring(
                validation,
                self._conclude,
                wait_s=wait_s,
                on_error=on_error,
                device=device,
                snapshot=selection.checkpoint is not None,
            )
            if mode == "async"
            else SynchronousScoring(validation, self._conclude)
        )
        self.errors = 0  # validations that failed in the training process

    @property
    def failed_validations(self) -> int:
        """Validations that failed, in the training process or in background scoring."""
        return self.errors + self.scoring.failures

    def run(self, step: int, baseline: bool = False) -> Decision | None:
        """One validation at ``step`` on every process (all must call it); the decision to act on now. A
        failed one is logged and counted (``on_error: raise`` re-raises) and decides nothing itself; a
        background decision collected before it failed is still handed over (one process) or travels with
        the next broadcast (several)."""
        try:
            return self._run(step, baseline)
        except Exception:
            if self.on_error == "raise":
                raise
            self.errors += 1
            logger.error(
                "sdcallbacks: validation at step %d failed; training continues.\n%s",
                step,
                traceback.format_exc(),
            )
            return self.poll()  # an earlier background decision still reaches the loop (one process)

    def _run(self, step: int, baseline: bool) -> Decision:
        processes, validation = self.processes, self.validation
        main = processes.is_main
        started = time.perf_counter()
        decision, failures, drawn = None, [], []
        if main:
            with processes.carried(failures):  # the previous task first: one in flight, decisions <= 1 late
                self.scoring.collect(wait=True)
        waited = time.perf_counter() - started
        meter = MemoryMeter(validation.sampler.device)
        meter.start()
        for variant in validation.plan(baseline):
            share, error = processes.attempt(lambda v=variant: self._draw(step, v))
            gathered, errors = processes.gather(share, error)
            if main and not failures:
                with processes.carried(failures):
                    if errors:
                        raise ValidationFailed("\n".join(errors))
                    gathered.sets.update(validation.loss(step, variant))
                    drawn.append(gathered)
        if main and drawn and not failures:
            with processes.carried(failures):
                weights = validation.sampler.modules
                now = self.scoring.handle(
                    step, drawn, baseline, weights, meter, blocked_since=started, waited=waited
                )
                # Taken only now: when this validation fails, the previous task's decision stays
                # undelivered and reaches the loop next (never lost with the failed validation).
                decision = merged(self.scoring.take(), now)
        # Decided once, on the main process; every process gets the same answer and the same bookkeeping
        # (best path and score, patience), so each can act on it.
        failure = failures[0] if failures else None
        decision, state, failure = processes.broadcast((decision, self.selection.state_dict(), failure))
        if failure is not None:
            raise ValidationFailed(failure)
        if not main:
            self.selection.load_state_dict(state)
        return decision or Decision()

    def _draw(self, step: int, variant: str):
        per_image = self.scoring.scores_per_image
        share = self.validation.draw(
            step, variant, self.processes.share(self.validation.jobs), score=per_image
        )
        if per_image and not self.processes.is_main:  # the main process still runs the set metrics
            self.validation.release()
        return share

    def _conclude(self, result: ValidationResult, weights: TrainingModules | WeightsSnapshot) -> Decision:
        """Report a finished validation and decide on it (main process; in the scoring thread when async)."""
        self.publisher.publish(result)
        decision = self.selection.decide(result, weights)
        if result.monitored is not None:
            self.publisher.publish_decision(decision, self.selection, result.step)
        return decision

    def poll(self) -> Decision | None:
        """Between validations, with one process: the decision of a background task that has finished."""
        if not self.scoring.busy() or self.processes.world > 1:
            return None
        self.scoring.collect()
        return self.scoring.take()

    def wait(self) -> Decision | None:
        """Block until the background task in flight has finished (``scoring.wait_s`` at most; main
        process); its decision."""
        self.scoring.collect(wait=True)
        return self.scoring.take()

    def finish(self) -> Decision | None:
        """End of training: the last background task's decision on every process (all must call it)."""
        if not isinstance(self.scoring, BackgroundScoring):
            return None
        decision, failures = None, []
        if self.processes.is_main:
            with self.processes.carried(failures):
                self.scoring.collect(wait=True)
            decision = self.scoring.take()
        failure = failures[0] if failures else None
        decision, state, failure = self.processes.broadcast((decision, self.selection.state_dict(), failure))
        if not self.processes.is_main:
            self.selection.load_state_dict(state)
        if failure is not None:
            raise ValidationFailed(failure)
        return decision

    def claim_output_dir(self, resumed: bool, overwrite: bool) -> str | None:
        """Why this run cannot write to ``output_dir`` (every process gets the main process's answer);
        see :func:`~sdcallbacks.outputs.claim.claim_output_dir`."""
        problem = None
        if self.processes.is_main:
            checkpoint = self.selection.checkpoint
            problem = claim_output_dir(
                self.publisher.writer, checkpoint, resumed=resumed, overwrite=overwrite
            )
        return self.processes.broadcast(problem)

    def loss_between_validations(self, step: int) -> None:
        """``val_loss`` of the model's weights now, reported without images (main process)."""
        if self.processes.is_main and self.validation.val_loss is not None and self.validation.sampler:
            self.publisher.publish_loss(step, self.validation.loss_values(step))

    def state_dict(self) -> dict[str, Any]:
        """Waits for a background task in flight first, so its results are in the state."""
        return {
            "scoring": self.scoring.state_dict(),
            "baseline": self.validation.baseline.state_dict(),
            "selection": self.selection.state_dict(),
            "failed_validations": self.failed_validations,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        baseline, scoring = state["baseline"], state.get("scoring")
        if scoring is None:  # saved before the core was split out: flat keys, baseline records by variant
            scoring = {"undelivered": state.get("undelivered")}
            baseline = {"records": baseline, "sets": state.get("baseline_sets", {})}
        self.scoring.load_state_dict(scoring)
        self.validation.baseline.load_state_dict(baseline)
        self.selection.load_state_dict(state["selection"])
        self.errors = state["failed_validations"]
