"""``BackgroundScoring`` (``scoring.mode: async``): score, report and decide in a thread of the main process.

The loop is blocked only while the images are drawn (and the step's weights copied, when checkpoints are
kept); everything else runs in a :class:`~sdcallbacks.runtime.BackgroundTask` and is logged at the
validated step. Two rules, kept here and nowhere else:

* **one task in flight**: a new validation first collects the previous task, waiting up to
  ``scoring.wait_s``; a task still running after that makes the new validation fail (its images are not
  scored) rather than pile up work;
* **each decision reaches the loop exactly once**: a collected task's decision waits in ``undelivered``
  until :meth:`take` hands it over, whichever hook collected it (the next validation, the first step after
  the task finished, ``state_dict`` or ``on_train_end``); two undelivered decisions merge, keeping a stop
  or a new best of either. The undelivered decision is part of the state, so a resumed run gets it too.

A task that raised is logged here, in the training process, when it is collected, and counted in
``failures``; ``on_error: raise`` re-raises it as :class:`ValidationFailed`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from sdcallbacks.execution.processes import ValidationFailed
from sdcallbacks.execution.synchronous import Conclude
from sdcallbacks.runtime import BackgroundTask, MemoryMeter, side_stream
from sdcallbacks.sampling.modules import TrainingModules
from sdcallbacks.selection.selection import Decision
from sdcallbacks.selection.snapshots import WeightsSnapshot
from sdcallbacks.validation.core import Validation
from sdcallbacks.validation.result import DrawnVariant

logger = logging.getLogger("sdcallbacks")


def merged(earlier: Decision | None, later: Decision | None) -> Decision | None:
    """Two decisions not yet delivered, as one: a stop or a new best in either one is kept."""
    if earlier is None or later is None:
        return later if earlier is None else earlier
    return Decision(
        stop=earlier.stop or later.stop,
        new_best=earlier.new_best or later.new_best,
        best_model_path=later.best_model_path,
        stopping_reason=later.stopping_reason if later.stop else earlier.stopping_reason,
    )


class BackgroundScoring:
    scores_per_image = False  # every image is scored in the thread, on the main process

    def __init__(
        self,
        validation: Validation,
        conclude: Conclude,
        *,
        wait_s: float,
        on_error: str = "warn",
        device: Any = None,
        snapshot: bool = True,
    ):
        self.validation = validation
        self.conclude = conclude
        self.wait_s = wait_s
        self.on_error = on_error
        self.device = device  # the scorers' device: CUDA work runs on a side stream
        self.snapshot = snapshot  # copy the step's weights (checkpoints are kept from the thread)
        self.task: BackgroundTask[Decision] | None = None
        self.task_step: int | None = None
        self.undelivered: Decision | None = None
        self.failures = 0

    def handle(
        self,
        step: int,
        drawn: Sequence[DrawnVariant],
        baseline: bool,
        weights: TrainingModules,
        meter: MemoryMeter,
        blocked_since: float,
        waited: float,
    ) -> None:
        """Hand one validation's images to a thread. ``time/blocked_s`` is how long the loop was held,
        ``time/waited_s`` the part of it spent waiting for the previous task (more than 0 when
        validations come faster than scoring)."""
        if self.task is not None:
            raise ValidationFailed(
                f"the scoring job of step {self.task_step} is still running after scoring.wait_s="
                f"{self.wait_s:g} s; step {step}'s images are not scored"
            )
        self.validation.load()  # first loads draw random numbers: here, where isolated_rng restores them
        kept = WeightsSnapshot.capture(weights) if self.snapshot and not baseline else weights
        costs = meter.read()
        blocked = time.perf_counter() - blocked_since
        for part in drawn:
            part.costs.update(costs, **{"time/blocked_s": blocked, "time/waited_s": waited})

        def score() -> Decision:
            with side_stream(self.device):
                result = self.validation.finish(step, drawn, baseline)
                self.validation.release()
                return self.conclude(result, kept)

        self.task = BackgroundTask(score, name=f"sdcallbacks-scoring-step-{step}")
        self.task_step = step

    def busy(self) -> bool:
        """Whether a task is in flight or a decision waits to be taken."""
        return self.task is not None or self.undelivered is not None

    def collect(self, wait: bool = False) -> None:
        """Collect the finished task: its decision waits in ``undelivered`` until :meth:`take`. Nothing
        while it runs; ``wait`` blocks up to ``scoring.wait_s``."""
        task = self.task
        if task is None:
            return
        if wait and not task.wait(self.wait_s):
            logger.error(
                "sdcallbacks: the scoring job of step %d is still running after scoring.wait_s=%g s",
                self.task_step,
                self.wait_s,
            )
            return
        if not task.done():
            return
        self.task = None
        if task.error is not None:
            self.failures += 1
            if self.on_error == "raise":
                raise ValidationFailed(task.traceback)
            logger.error(
                "sdcallbacks: background scoring of the validation at step %d failed; training continues."
                "\n%s",
                self.task_step,
                task.traceback,
            )
            return
        self.undelivered = merged(self.undelivered, task.result)

    def take(self) -> Decision | None:
        """The collected decision not yet handed to the loop, once."""
        decision, self.undelivered = self.undelivered, None
        return decision

    def state_dict(self) -> dict[str, Any]:
        """Waits for the task in flight first (``scoring.wait_s``), so its results are in."""
        self.collect(wait=True)
        return {"undelivered": asdict(self.undelivered) if self.undelivered is not None else None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        undelivered = state.get("undelivered")
        self.undelivered = Decision(**undelivered) if undelivered is not None else None
