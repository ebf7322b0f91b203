"""When a validation is due.

Triggers are OR-ed: ``every_n_steps``, ``every_n_epochs`` (a float; needs ``steps_per_epoch``) and
``every_n_minutes``. Step triggers fire when the optimizer step crosses a multiple of the interval, so a
loop that calls ``on_step_end`` irregularly still validates once per interval. Nothing fires before
``start_step``, at or before the step training started (or resumed) from, or twice for the same step.
The state round-trips through ``state_dict()`` for resume.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

from sdcallbacks.config.schema import ScheduleConfig


class ValidationSchedule:
    def __init__(self, config: ScheduleConfig, clock: Callable[[], float] = time.monotonic):
        self.config = config
        self._clock = clock
        self.steps_per_epoch: float | None = None
        self.last_step: int | None = None  # last step that was validated (or the resume step)
        self._last_time: float | None = None

    def start(self, global_step: int, steps_per_epoch: float | None = None) -> None:
        """Training starts (or resumes) at ``global_step``: that step counts as already seen."""
        if self.config.every_n_epochs is not None and not steps_per_epoch:
            raise ValueError("schedule.every_n_epochs needs steps_per_epoch (pass it to on_train_start)")
        self.steps_per_epoch = steps_per_epoch
        if self.last_step is None or self.last_step < global_step:
            self.last_step = global_step
        self._last_time = self._clock()

    def _crossed(self, interval: float, step: int) -> bool:
        # Intervals that ended before start_step are not owed: count from just before it.
        reference = max(self.last_step, self.config.start_step - 1)
        return math.floor(step / interval + 1e-9) > math.floor(reference / interval + 1e-9)

    def is_due(self, global_step: int) -> bool:
        """Whether ``global_step`` (just finished) should be validated. Cheap: called every step."""
        last = self.last_step
        if last is None or global_step <= last or global_step < self.config.start_step:
            return False
        cfg = self.config
        if cfg.every_n_steps is not None and self._crossed(cfg.every_n_steps, global_step):
            return True
        if cfg.every_n_epochs is not None and self._crossed(
            cfg.every_n_epochs * self.steps_per_epoch, global_step
        ):
            return True
        return (
            cfg.every_n_minutes is not None
            and self._last_time is not None
            and self._clock() - self._last_time >= 60.0 * cfg.every_n_minutes
        )

    def is_due_at_end(self, global_step: int) -> bool:
        """The final step is validated once, unless it already was."""
        return self.config.validate_at_end and self.last_step is not None and global_step > self.last_step

    def mark_done(self, global_step: int) -> None:
        # A manual validation at an earlier step does not make later steps due again.
        self.last_step = global_step if self.last_step is None else max(self.last_step, global_step)
        self._last_time = self._clock()

    def state_dict(self) -> dict[str, Any]:
        return {"last_step": self.last_step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.last_step = state["last_step"]
