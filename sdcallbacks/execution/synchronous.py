"""``SynchronousScoring`` (``scoring.mode: sync``): score, report and decide in the training process.

The loop waits for the whole validation; its decision reaches the loop at the step that was validated.
With several processes each one scores its own share per image (``scores_per_image``); the main process
adds the metrics that need every image.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from sdcallbacks.runtime import MemoryMeter
from sdcallbacks.sampling.rng import isolated_rng
from sdcallbacks.selection.selection import Decision
from sdcallbacks.validation.core import Validation
from sdcallbacks.validation.result import DrawnVariant, ValidationResult

Conclude = Callable[[ValidationResult, object], Decision]


class SynchronousScoring:
    scores_per_image = True
    failures = 0  # a failure here raises in the training process, where the runner counts it

    def __init__(self, validation: Validation, conclude: Conclude):
        self.validation = validation
        self.conclude = conclude  # report the result, decide on it (main process)

    def handle(
        self,
        step: int,
        drawn: Sequence[DrawnVariant],
        baseline: bool,
        weights: object,
        meter: MemoryMeter,
        **_,
    ) -> Decision:
        with isolated_rng():  # backbones (and their lazy loading) never move training's streams
            result = self.validation.finish(step, drawn, baseline)
        self.validation.release()
        costs = meter.read()
        for part in result.variants:
            part.add_costs(costs)
        return self.conclude(result, weights)

    # Nothing is ever in flight: the decision was returned by handle().
    def collect(self, wait: bool = False) -> None:
        pass

    def take(self) -> Decision | None:
        return None

    def busy(self) -> bool:
        return False

    def state_dict(self) -> dict:
        return {"undelivered": None}

    def load_state_dict(self, state: dict) -> None:
        pass
