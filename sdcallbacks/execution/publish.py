"""``Publisher``: a finished validation to the local files and the trackers (main process).

Takes a :class:`~sdcallbacks.validation.ValidationResult` and writes, per variant: the images and the
grid under ``samples/``, one ``metrics.jsonl`` row per image and one aggregate row, and the trackers' log
(scalars, prompt grids, the per-image table). It keeps no state a later result needs. One lock serialises
writers: with background scoring the scoring thread and the training loop (``val_loss`` between
validations) both write.
"""

from __future__ import annotations

import threading
from typing import Any

from sdcallbacks.outputs.grid import prompt_grids
from sdcallbacks.outputs.writer import OutputWriter
from sdcallbacks.selection.selection import Decision, Selection
from sdcallbacks.trackers import TrackerLogger, ValidationLog
from sdcallbacks.validation.result import ValidationResult, VariantResult


class Publisher:
    def __init__(
        self,
        writer: OutputWriter,
        trackers: TrackerLogger,
        score_keys: list[str],
        images: bool = True,
    ):
        self.writer = writer
        self.trackers = trackers
        self.score_keys = score_keys  # the per-image table's columns, fixed for the run
        self.images = images  # prompt grids to the trackers (trackers.images)
        self._lock = threading.Lock()

    def publish(self, result: ValidationResult) -> None:
        with self._lock:
            for part in result.variants:
                self._write(result.step, part, result.weights)
                self.writer.append_aggregate(result.step, part.label, part.values, baseline=result.baseline)
                self.trackers.log_validation(
                    ValidationLog(
                        step=result.step,
                        prefix=part.prefix,
                        scalars=part.values,
                        prompt_grids=prompt_grids(part.jobs, part.images) if self.images else {},
                        records=part.records,
                        images=part.images,
                        score_keys=self.score_keys,
                    )
                )

    def publish_loss(self, step: int, values: dict[str, float]) -> None:
        """``val_loss`` measured between validations (``val_loss.every_n_steps``)."""
        with self._lock:
            self.writer.append_loss(step, values)
            self.trackers.log_scalars(values, step)

    def publish_decision(self, decision: Decision, selection: Selection, step: int) -> None:
        """The decision's own scalars (gates, events, Pareto) and events, the run summary (best score,
        step, path; stopping reason; event steps) and a new best checkpoint."""
        with self._lock:
            summary = selection.summary()
            if decision.scalars:  # gates, events, Pareto front: at the validated step
                self.writer.append_decision(step, decision.scalars)
                self.trackers.log_scalars(decision.scalars, step)
            if decision.ineligible:
                self.writer.append_event(step, "ineligible", gates=list(decision.ineligible))
            for event in decision.fired:
                self.writer.append_event(step, "overfitting", name=event.name, description=event.description)
            # The best step so far and any stop, for readers of the files (``sdcallbacks report``).
            self.writer.append_event(step, "selection", **summary)
            self.trackers.set_summary(summary)
            if decision.new_best and decision.best_model_path:
                self.trackers.log_checkpoint(
                    decision.best_model_path, step, selection.best_model_score, selection.monitor
                )

    def finish(self, summary: dict[str, Any]) -> None:
        """The run's final summary (best score, step, path; stopping reason), then the trackers close."""
        with self._lock:
            self.trackers.set_summary(summary)
            self.trackers.finish()

    def _write(self, step: int, part: VariantResult, weights: str | None) -> None:
        paths = self.writer.write_images(step, part.label, part.jobs, part.images, weights)
        self.writer.write_grid(step, part.label, part.jobs, part.images, weights)
        for record, path in zip(part.records, paths):
            record.image_path = str(path)
            self.writer.append_image_record(record)
