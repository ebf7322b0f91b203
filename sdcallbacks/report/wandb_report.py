"""``sdcallbacks wandb-report RUN_PATH --outputs DIR``: a W&B report laid out for a validated run.

W&B's default workspace gives every logged key a panel, in sections by prefix (``val/<metric>/...``,
``val/time/...``, ``val/images/...``); the views that answer "which step is best" are few and specific:

1. the monitored key against ``train/global_step`` with its 95% bootstrap interval (``/ci_low``,
   ``/ci_high``, dashed: W&B line plots draw no band from two keys);
2. each metric's paired delta against the base model (``/delta``), one panel per metric;
3. each prompt's grid (``val/images/<prompt>``) in a media panel, whose step slider walks the validations;
4. the samples table (``val/samples``) of the last validation.

The report is built with W&B's own reports API (``wandb_workspaces.reports.v2``, the ``[wandb-report]``
extra) for one run (run sets of the report's project, filtered on the run's id). The keys come from the
run's local ``metrics.jsonl``, which holds what was logged, so the report can be written offline as the
JSON view spec W&B stores (``--spec FILE``) or saved to W&B (needs ``wandb login``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sdcallbacks.report.run_data import ReportError, RunData
from sdcallbacks.trackers.wandb import STEP_METRIC


@dataclass(frozen=True)
class RunPath:
    entity: str
    project: str
    run_id: str

    @classmethod
    def parse(cls, text: str) -> RunPath:
        """``entity/project/run_id`` as W&B's run overview shows it, or with ``/runs/`` as in its URL."""
        parts = [p for p in text.strip("/").split("/") if p]
        if len(parts) == 4 and parts[2] == "runs":
            parts = [parts[0], parts[1], parts[3]]
        if len(parts) != 3:
            raise ReportError(
                f"run path {text!r}: expected ENTITY/PROJECT/RUN_ID (W&B's run overview, 'Run path')"
            )
        return cls(*parts)


def monitored_key(run: RunData) -> str:
    """The key best steps were chosen by (the selection events' ``best/<key>``), else ``val/score`` where
    logged, else the first metric."""
    if run.monitor is not None:
        return run.monitor
    metrics = run.metrics()
    if not metrics:
        raise ReportError(f"{run.folder}: no metric was logged")
    return "val/score" if "val/score" in metrics else metrics[0]


def prompt_names(run: RunData) -> list[str]:
    return list(dict.fromkeys(str(r["prompt_name"]) for r in run.images if r.get("variant") == "model"))


def _stem(key: str) -> str:
    """``val/clip_score/mean`` -> ``val/clip_score``; a set-level ``val/kid`` is its own stem."""
    return key[: -len("/mean")] if key.endswith("/mean") else key


def build_report(run: RunData, path: RunPath, title: str | None = None) -> Any:
    """The report (a ``wandb_workspaces.reports.v2.Report``), unsaved."""
    try:
        import wandb_workspaces.reports.v2 as wr
    except ImportError as err:
        raise ReportError(
            f'wandb-report needs W&B\'s reports API ({err}): pip install "sdcallbacks[wandb-report]"'
        ) from None

    logged = {key for validation in run.series() for key in validation.values}

    def grid(panels: list[Any]) -> Any:
        # No entity/project on the run set: it reads the report's own project (the run's), and building
        # the spec needs no request for the project's internal id.
        runset = wr.Runset(name=path.run_id, filters=f"ID = '{path.run_id}'")
        return wr.PanelGrid(runsets=[runset], panels=panels, hide_run_sets=True)

    def line(title: str, keys: list[str], dashed: tuple[str, ...] = ()) -> Any:
        return wr.LinePlot(
            title=title,
            x=STEP_METRIC,
            y=keys,
            title_x="training step",
            line_marks={f"{path.run_id}:{k}": "dashed" for k in dashed} or None,
            layout=wr.Layout(w=12, h=8),
        )

    monitor = monitored_key(run)
    band = tuple(
        f"{_stem(monitor)}/{end}" for end in ("ci_low", "ci_high") if f"{_stem(monitor)}/{end}" in logged
    )
    deltas = [f"{_stem(k)}/delta" for k in run.metrics() if f"{_stem(k)}/delta" in logged]
    prompts = prompt_names(run)

    blocks: list[Any] = [
        wr.P(f"Validation of run {path.run_id} by sdcallbacks: every panel plots against {STEP_METRIC}."),
        wr.H2(f"Monitored: {monitor}"),
        grid([line(f"{monitor} (dashed: 95% CI)", [monitor, *band], dashed=band)]),
    ]
    if deltas:
        blocks += [
            wr.H2("Against the base model"),
            wr.P(
                "Mean over (prompt, seed) pairs of the score minus the base model's score for the same pair."
            ),
            grid([line(key, [key]) for key in deltas]),
        ]
    if prompts:
        blocks += [
            wr.H2("Samples per prompt"),
            wr.P("One grid per prompt (its seeds in a row); the step slider walks the validations."),
            grid(
                [
                    wr.MediaBrowser(title=p, media_keys=[f"val/images/{p}"], layout=wr.Layout(w=12, h=10))
                    for p in prompts
                ]
            ),
        ]
    blocks += [
        wr.H2("Samples table"),
        grid([wr.WeavePanelSummaryTable(table_name="val/samples", layout=wr.Layout(w=24, h=14))]),
    ]
    return wr.Report(
        entity=path.entity,
        project=path.project,
        title=title or f"Validation: {path.run_id}",
        description=f"Output folder {run.folder}",
        blocks=blocks,
        width="fluid",
    )


def report_spec(report: Any) -> dict[str, Any]:
    """The view W&B stores for the report (display name, project, block spec), as JSON-ready data."""
    return report._to_model().model_dump(mode="json", by_alias=True, exclude_none=True)


def write_spec(report: Any, out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report_spec(report), indent=1), encoding="utf-8")
    return out


def save_report(report: Any) -> str:
    """Saves to W&B; the report's URL. Needs a W&B login: without one, a clear error before any request."""
    import wandb

    try:
        logged_in = bool(wandb.Api().api_key)
    except wandb.errors.UsageError:  # no API key configured
        logged_in = False
    if not logged_in:
        raise ReportError("not logged in to W&B (wandb login, or WANDB_API_KEY); offline, write --spec FILE")
    report.save()
    return str(report.url)
