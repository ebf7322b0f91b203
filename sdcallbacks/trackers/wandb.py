"""Weights & Biases: one ``run.log`` per validation with scalars, a grid per prompt and a table.

Steps: every row carries ``train/global_step`` and is logged **without** ``step=``, with
``define_metric("val/*", step_metric="train/global_step")``. W&B drops a whole call whose explicit
``step`` is lower than its internal one (a resume to an earlier step, a late validation), and an implicit
call after an explicit one merges into the open row; with the step as a metric, rows always land and the
charts use the optimizer step as x axis (Lightning's ``WandbLogger`` pattern). Nothing is logged with
``commit=True``. Only ``val/*`` keys are tied to the step metric, so the training loop's own keys are left
as the user logs them.

The monitored key gets ``summary=min|max`` following ``mode``; the best score, its step and path and the
stopping reason go to ``run.summary`` under ``best/...`` and ``early_stop/reason`` (separate keys, since
writing the monitored key itself would replace the min/max summary).
"""

from __future__ import annotations

import math
import os
from typing import Any

from sdcallbacks.config.schema import WandbConfig
from sdcallbacks.trackers.base import TrackerAdapter, ValidationLog

STEP_METRIC = "train/global_step"
MAX_TABLE_ROWS = 10_000  # W&B's limit per table


class WandbAdapter(TrackerAdapter):
    def __init__(self, run: Any, config: WandbConfig, owns_run: bool = False):
        super().__init__(run)
        self.name = "wandb"
        self.run = run
        self.config = config
        self.owns_run = owns_run

    def setup(self, monitor: str | None, mode: str) -> None:
        self.run.define_metric(STEP_METRIC)
        self.run.define_metric("val/*", step_metric=STEP_METRIC)
        if monitor is not None:
            self.run.define_metric(monitor, step_metric=STEP_METRIC, summary=mode)

    def log_scalars(self, values: dict[str, float], step: int) -> None:
        self.run.log({**values, STEP_METRIC: step})

    def log_validation(self, log: ValidationLog) -> None:
        import wandb

        payload: dict[str, Any] = {**log.scalars, STEP_METRIC: log.step}
        for name, grid in log.prompt_grids.items():  # one image per key: far below W&B's 108 per key
            payload[f"{log.prefix}/images/{name}"] = wandb.Image(grid, caption=name)
        if self.config.table and log.records:
            payload[f"{log.prefix}/samples"] = self._table(log)
        self.run.log(payload)

    def _table(self, log: ValidationLog) -> Any:
        import wandb

        columns = ["step", "variant", "prompt_name", "prompt", "seed", "image", *log.score_keys]
        table = wandb.Table(columns=columns)  # a new table per validation (IMMUTABLE tables ignore re-logs)
        for record, image in list(zip(log.records, log.images))[:MAX_TABLE_ROWS]:
            scores = [record.scores.get(key) for key in log.score_keys]
            scores = [None if v is None or not math.isfinite(v) else float(v) for v in scores]
            table.add_data(
                record.step,
                record.variant,
                record.prompt_name,
                record.prompt,
                record.seed,
                wandb.Image(image),
                *scores,
            )
        return table

    def set_summary(self, values: dict[str, Any]) -> None:
        for key, value in values.items():
            self.run.summary[key] = value

    def log_checkpoint(self, path: str, step: int, score: float, monitor: str) -> None:
        if not self.config.log_best_checkpoint:
            return
        import wandb

        artifact = wandb.Artifact(
            f"model-{self.run.id}", type="model", metadata={"step": step, "monitor": monitor, "score": score}
        )
        artifact.add_dir(path)
        # W&B adds "latest" itself; "best" moves to each new best version.
        self.run.log_artifact(artifact, aliases=["best", f"step-{step}"])

    def finish(self) -> None:
        if self.owns_run:
            self.run.finish()


def create_run(config: WandbConfig, directory: str, run_config: dict[str, Any]) -> Any:
    """A run of the callback's own, for loops without an accelerate ``wandb`` tracker. Its files go under
    ``$WANDB_DIR`` if set, else ``directory`` (the output folder); passed explicitly, because wandb keeps
    the settings of its first ``init`` in a process-wide singleton."""
    import wandb

    return wandb.init(
        project=config.project,
        entity=config.entity,
        name=config.name,
        mode=config.mode,
        dir=os.environ.get("WANDB_DIR") or directory,
        config=run_config,
    )
