"""MLflow: scalars through accelerate's ``mlflow`` tracker, each prompt's grid as an MLflow image at its
step, the run summary as tags.

accelerate's tracker logs numbers only and has no image method, so grids go through MLflow's own client
(``MlflowClient.log_image(run_id, image, key=..., step=...)``, MLflow >= 2.12) into the tracker's run: the
run page shows them under its images, with a step slider. Summary values (best step and score, the
stopping reason) are tags, which take strings.
"""

from __future__ import annotations

from typing import Any

from sdcallbacks.trackers.base import TrackerAdapter, ValidationLog


class MlflowAdapter(TrackerAdapter):
    def setup(self, monitor: str | None, mode: str) -> None:
        from mlflow import MlflowClient

        self.client = MlflowClient()
        self.run_id = self.tracker.tracker.info.run_id  # accelerate's tracker holds the active run

    def log_validation(self, log: ValidationLog) -> None:
        self.log_scalars(log.scalars, log.step)
        for name, grid in log.prompt_grids.items():
            self.client.log_image(
                self.run_id, grid.convert("RGB"), key=f"{log.prefix}/images/{name}", step=log.step
            )

    def set_summary(self, values: dict[str, Any]) -> None:
        for key, value in values.items():
            if value is not None:
                self.client.set_tag(self.run_id, key, str(value))
