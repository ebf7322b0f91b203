"""Weights & Biases: one ``run.log`` per validation with scalars, a grid per prompt and a table.

Steps: every row carries ``train/global_step``, with ``define_metric("val/*", step_metric=...)``, so the
``val/*`` charts use the optimizer step as x axis even for rows logged late (Lightning's ``WandbLogger``
pattern). W&B's own step is shared with the training loop, which usually logs ``step=global_step``
(diffusers' scripts) and leaves that row open until a higher step arrives. So each row goes to an explicit
W&B step (``RowPlacement``): the validated step when W&B has not passed it, which is the row the script
then fills with that step's ``loss``; else W&B's current step, so a late row (async scoring, a resume
behind W&B's step) is never dropped as "not monotonically increasing". Nothing is committed: the script's
next row (or ``finish``) closes ours. Only ``val/*`` keys are tied to the step metric; the loop's own keys
are left as the user logs them.

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


class RowPlacement:
    """Which W&B step a row for training step ``step`` goes to (see the module docstring).

    ``current`` is ``run.step``: the open row (a script's ``log(step=N)`` leaves N open) or the next one.
    A row is never put in an open row holding our own keys of another training step (it would overwrite
    them, e.g. a late async result after the validation of the step before): it takes the next W&B step.
    """

    def __init__(self) -> None:
        self.last: tuple[int, int] | None = None  # (W&B step, training step) of the row we wrote last

    def row_for(self, step: int, current: int) -> int:
        row = max(step, current)
        if self.last is not None and row <= self.last[0] and step != self.last[1]:
            row = self.last[0] + 1
        self.last = (row, step)
        return row


class WandbAdapter(TrackerAdapter):
    def __init__(self, run: Any, config: WandbConfig, owns_run: bool = False):
        super().__init__(run)
        self.name = "wandb"
        self.run = run
        self.config = config
        self.owns_run = owns_run
        self.rows = RowPlacement()

    def setup(self, monitor: str | None, mode: str) -> None:
        self.run.define_metric(STEP_METRIC)
        self.run.define_metric("val/*", step_metric=STEP_METRIC)
        if monitor is not None:
            self.run.define_metric(monitor, step_metric=STEP_METRIC, summary=mode)

    def log_scalars(self, values: dict[str, float], step: int) -> None:
        self._log({**values, STEP_METRIC: step}, step)

    def _log(self, payload: dict[str, Any], step: int) -> None:
        try:
            current = int(self.run.step)
        except Exception:  # a run that cannot tell its step (mode="shared"): W&B places the row itself
            self.run.log(payload)
            return
        self.run.log(payload, step=self.rows.row_for(step, current))

    def log_validation(self, log: ValidationLog) -> None:
        import wandb

        payload: dict[str, Any] = {**log.scalars, STEP_METRIC: log.step}
        for name, grid in log.prompt_grids.items():  # one image per key: far below W&B's 108 per key
            payload[f"{log.prefix}/images/{name}"] = wandb.Image(grid, caption=name)
        if self.config.table and log.records:
            payload[f"{log.prefix}/samples"] = self._table(log)
        self._log(payload, log.step)

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
        id=config.run_id,
        resume="allow" if config.run_id else None,
    )
