"""Early stopping with Lightning ``EarlyStopping`` semantics (``callbacks/early_stopping.py``).

Each :meth:`EarlyStopping.check` is one validation. In order, as Lightning's ``_evaluate_stopping_criteria``:

1. a non-finite score stops (``check_finite``);
2. a score **strictly** better than ``stopping_threshold`` stops (the goal is reached; Lightning compares
   with ``torch.gt`` for max and ``torch.lt`` for min, so a score equal to the threshold goes on);
3. a score **strictly** worse than ``divergence_threshold`` stops;
4. a score better than the best by **strictly more** than ``min_delta`` becomes the best and resets the
   wait (Lightning: ``monitor_op(current - min_delta, best)`` with ``min_delta`` signed by ``mode``);
   otherwise the wait grows by one and training stops once it reaches ``patience``.

``patience`` counts validations, not steps. The reason is kept in ``stopping_reason``.

Where this differs from Lightning, on purpose: a negative ``min_delta`` is taken by its absolute value
(Lightning would flip the comparison); there is no ``log_rank_zero_only`` or ``verbose`` (the callback logs
one line per stop on the main process), and the decision is made once, on the main process, and broadcast,
where Lightning reduces ``should_stop`` across ranks. A NaN score with ``check_finite`` off never improves
(every comparison with NaN is false) and so counts against patience, as in Lightning.
"""

from __future__ import annotations

import math
from enum import Enum
from typing import Any, Literal


class StoppingReason(str, Enum):
    NOT_STOPPED = "not_stopped"
    STOPPING_THRESHOLD = "stopping_threshold"
    DIVERGENCE_THRESHOLD = "divergence_threshold"
    PATIENCE_EXHAUSTED = "patience_exhausted"
    NON_FINITE_METRIC = "non_finite_metric"
    EVENT = "event"  # an overfitting event named in early_stopping.on_events fired


class EarlyStopping:
    def __init__(
        self,
        monitor: str,
        mode: Literal["min", "max"] = "min",
        patience: int = 3,
        min_delta: float = 0.0,
        stopping_threshold: float | None = None,
        divergence_threshold: float | None = None,
        check_finite: bool = True,
    ):
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        if patience < 0:
            raise ValueError(f"patience must be >= 0, got {patience}")
        self.monitor = monitor
        self.mode = mode
        self.patience = patience
        self.min_delta = abs(min_delta)
        self.stopping_threshold = stopping_threshold
        self.divergence_threshold = divergence_threshold
        self.check_finite = check_finite
        self.wait_count = 0
        self.best_score = math.inf if mode == "min" else -math.inf
        self.stopped = False
        self.stopping_reason = StoppingReason.NOT_STOPPED
        self.stopping_message = ""

    def _better(self, a: float, b: float) -> bool:
        return a < b if self.mode == "min" else a > b

    def check(self, score: float) -> bool:
        """Record one validation's score; return whether training should stop."""
        sign = 1.0 if self.mode == "max" else -1.0
        if self.check_finite and not math.isfinite(score):
            return self._stop(StoppingReason.NON_FINITE_METRIC, f"{self.monitor} = {score} is not finite")
        if self.stopping_threshold is not None and self._better(score, self.stopping_threshold):
            return self._stop(
                StoppingReason.STOPPING_THRESHOLD,
                f"{self.monitor} = {score:.6g} passed stopping_threshold {self.stopping_threshold}",
            )
        if self.divergence_threshold is not None and self._better(self.divergence_threshold, score):
            return self._stop(
                StoppingReason.DIVERGENCE_THRESHOLD,
                f"{self.monitor} = {score:.6g} is worse than "
                f"divergence_threshold {self.divergence_threshold}",
            )
        if sign * (score - self.best_score) > self.min_delta:
            self.best_score = score
            self.wait_count = 0
            return False
        self.wait_count += 1
        if self.wait_count >= self.patience:
            return self._stop(
                StoppingReason.PATIENCE_EXHAUSTED,
                f"{self.monitor} did not improve by more than {self.min_delta} "
                f"in {self.wait_count} validations; best {self.best_score:.6g}",
            )
        return False

    def stop_on_event(self, name: str, description: str) -> bool:
        """Stop for an overfitting event (``early_stopping.on_events``), whatever the monitored value."""
        return self._stop(StoppingReason.EVENT, f"event {name!r} fired: {description}")

    def _stop(self, reason: StoppingReason, message: str) -> bool:
        self.stopped = True
        self.stopping_reason = reason
        self.stopping_message = message
        return True

    def state_dict(self) -> dict[str, Any]:
        return {
            "wait_count": self.wait_count,
            "best_score": self.best_score,
            "stopped": self.stopped,
            "stopping_reason": self.stopping_reason.value,
            "stopping_message": self.stopping_message,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.wait_count = state["wait_count"]
        self.best_score = state["best_score"]
        self.stopped = state["stopped"]
        self.stopping_reason = StoppingReason(state["stopping_reason"])
        self.stopping_message = state["stopping_message"]
