"""``sdcallbacks report``: one self-contained HTML file of a run (every image embedded, no network), and
its plots as PNG files beside it.

The page holds: the run's summary (best step, stop), a curve per metric (mean, 95% CI band, baseline,
best step, stop), the grid of every validation behind a step slider, a per-prompt table per metric, the
leaderboard of an ``evaluate`` run, and tag accuracy by the number of prompted tags. The HTML is written
to a temporary file and renamed, so a failed report never leaves a half-written page.
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from sdcallbacks.outputs.writer import image_id
from sdcallbacks.report.figures import (
    TagTable,
    metric_curve,
    tag_count_table,
    tag_plot,
    tag_position_table,
)
from sdcallbacks.report.run_data import RunData, read_run

STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.5em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: .2em; margin-top: 1.6em; }
.curves { display: flex; flex-wrap: wrap; gap: 8px; } .curves img { width: 520px; }
table { border-collapse: collapse; font-size: .9em; margin: .5em 0; }
td, th { border: 1px solid #ccc; padding: 3px 8px; text-align: right; } th { background: #f4f4f4; }
td:first-child, th:first-child { text-align: left; } tr.best { background: #e6f4e6; }
#grid-image { max-width: 100%; image-rendering: pixelated; border: 1px solid #ccc; }
.note { color: #a60; }
.rates { display: flex; flex-wrap: wrap; gap: 6px; } .rate { margin: 0; text-align: center; }
.rate img { width: 96px; height: 96px; image-rendering: pixelated; display: block; }
.rate label { font-size: .8em; }
"""

SLIDER_SCRIPT = """
const grids = JSON.parse(document.getElementById("grid-data").textContent);
const slider = document.getElementById("grid-step");
const image = document.getElementById("grid-image");
const label = document.getElementById("grid-label");
function show(index) {
  image.src = grids[index].src;
  image.alt = "grid of " + grids[index].label;
  label.textContent = grids[index].label;
}
slider.addEventListener("input", () => show(Number(slider.value)));
show(Number(slider.value));
"""


@dataclass
class ReportFiles:
    html: Path
    plots: list[Path]
    torn_lines: list[int]


def write_report(folder: str | Path, out: str | Path | None = None) -> ReportFiles:
    """Read ``folder`` (a run's, ``evaluate``'s or ``watch``'s output) and write its report to ``out``
    (default ``folder/report.html``), with the plots in ``<out stem>_files/``."""
    run = read_run(folder)
    out = Path(out) if out is not None else run.folder / "report.html"
    plots_dir = out.with_name(f"{out.stem}_files")
    plots_dir.mkdir(parents=True, exist_ok=True)

    selection = run.selection or {}
    best_step = selection.get("best/step")
    if best_step is None and run.leaderboard:  # evaluate ranks checkpoints in its leaderboard instead
        best = [r for r in run.leaderboard.get("rows", []) if r.get("name") == run.leaderboard.get("best")]
        best_step = best[0].get("step") if best else None
    stop = run.stop
    curves = []
    for index, key in enumerate(run.metrics()):
        name = f"curve_{index:02d}_{re.sub(r'[^A-Za-z0-9]+', '_', key).strip('_')}.png"
        drawn = metric_curve(run, key, plots_dir / name, best_step, stop)
        if drawn is not None:
            curves.append((key, drawn))
    tag_step = best_step if best_step is not None else _last_step(run)
    by_count, by_position = tag_count_table(run, tag_step), tag_position_table(run, tag_step)
    count_plot = tag_plot(
        by_count,
        plots_dir / "tag_accuracy_by_tag_count.png",
        "tags in the prompt",
        "Tag accuracy by the number of prompted tags",
    )
    position_plot = tag_plot(
        by_position,
        plots_dir / "tag_accuracy_by_tag_position.png",
        "position of the tag in the prompt",
        "Tag accuracy by tag position",
    )

    sections = [
        _summary(run, selection, stop),
        _curves(curves),
        _grids(run),
        _per_prompt(run),
        _leaderboard(run),
        _tags(by_count, count_plot, "the number of prompted tags", "tags in the prompt", "images"),
        _tags(by_position, position_plot, "tag position in the prompt", "position", "tags"),
        _rating(run, out),
    ]
    page = (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>sdcallbacks report: {html.escape(run.folder.name)}</title><style>{STYLE}</style></head>"
        f"<body><h1>sdcallbacks report: {html.escape(str(run.folder))}</h1>"
        + "".join(s for s in sections if s)
        + "</body></html>\n"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as fh:
            fh.write(page)
        os.chmod(temporary, 0o644)  # mkstemp's 0600 would hide it from a web server or another user
        os.replace(temporary, out)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
    plots = [p for _, p in curves] + [p for p in (count_plot, position_plot) if p is not None]
    return ReportFiles(out, plots, run.torn_lines)


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _number(value: object) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return "–" if not math.isfinite(value) else f"{value:.4g}"
    return html.escape("–" if value is None else str(value))


def _last_step(run: RunData) -> int | None:
    series = run.series()
    return series[-1].step if series else None


def _summary(run: RunData, selection: dict, stop: tuple[int, str] | None) -> str:
    items = [f"{len(run.series())} validations of the model, {len(run.images)} scored images"]
    monitor = run.monitor
    if selection.get("best/step") is not None:
        score = f" ({html.escape(monitor)} = {_number(selection[f'best/{monitor}'])})" if monitor else ""
        items.append(f"best step: <b>{selection['best/step']}</b>{score}")
    if selection.get("best/lora_scale") is not None:
        items.append(f"best LoRA scale: {_number(selection['best/lora_scale'])}")
    if stop is not None:
        items.append(f"stopped early at step {stop[0]}: {html.escape(stop[1])}")
    items += _selection_events(run, selection)
    if run.torn_lines:
        lines = ", ".join(str(n) for n in run.torn_lines)
        items.append(
            f"<span class='note'>skipped a torn record (metrics.jsonl line {lines}: the run stopped "
            "mid-write)</span>"
        )
    return "<h2>Summary</h2><ul>" + "".join(f"<li>{i}</li>" for i in items) + "</ul>"


def _selection_events(run: RunData, selection: dict) -> list[str]:
    """Overfitting events, validations a gate kept from best, and the Pareto front (issue 17's selection)."""
    items = [
        f"event <b>{html.escape(str(e.get('name')))}</b> at step {e['step']}: "
        f"{html.escape(str(e.get('description', '')))}"
        for e in run.events
        if e.get("event") == "overfitting"
    ]
    for event in (e for e in run.events if e.get("event") == "ineligible"):
        gates = "; ".join(html.escape(str(g)) for g in event.get("gates", []))
        items.append(f"step {event['step']} not eligible for best: {gates}")
    if selection.get("pareto/front"):
        steps = ", ".join(str(s) for s in selection["pareto/front"])
        items.append(f"Pareto front: steps {steps}")
    return items


def _curves(curves: list[tuple[str, Path]]) -> str:
    if not curves:
        return ""
    images = "".join(
        f"<img class='curve' src='{_data_uri(p)}' alt='{html.escape(key)} over steps'>" for key, p in curves
    )
    return f"<h2>Metrics over steps</h2><div class='curves'>{images}</div>"


def _grids(run: RunData) -> str:
    shown = [v for v in run.validations if v.grid is not None]
    shown.sort(key=lambda v: (v.step, v.variant != "base"))
    if not shown:
        return ""
    data = [
        {
            "label": f"step {v.step}" + (f" ({v.variant})" if v.variant != "model" else ""),
            "src": _data_uri(v.grid),
        }
        for v in shown
    ]
    # "</" would end the script element early; JSON allows "<\/" for it.
    payload = json.dumps(data).replace("</", "<\\/")
    return (
        "<h2>Validation grids</h2>"
        f"<p><input type='range' id='grid-step' min='0' max='{len(data) - 1}' value='{len(data) - 1}' "
        "step='1' aria-label='validation'> <span id='grid-label'></span></p>"
        "<img id='grid-image' alt='validation grid'>"
        f"<script type='application/json' id='grid-data'>{payload}</script>"
        f"<script>{SLIDER_SCRIPT}</script>"
    )


def _per_prompt(run: RunData) -> str:
    tables = []
    ordered = sorted(run.validations, key=lambda v: (v.step, v.variant != "base"))
    for key in run.metrics():
        stem = key[: -len("/mean")] if key.endswith("/mean") else key
        prompts = list(
            dict.fromkeys(
                k[len(stem) + len("/prompt/") :]
                for v in ordered
                for k in v.values
                if k.startswith(f"{stem}/prompt/")
            )
        )
        if not prompts:
            continue
        head = "".join(f"<th>{html.escape(p)}</th>" for p in prompts)
        rows = "".join(
            f"<tr><td>{v.step} {html.escape(v.variant)}</td>"
            + "".join(f"<td>{_number(v.values.get(f'{stem}/prompt/{p}'))}</td>" for p in prompts)
            + f"<td>{_number(v.values.get(key))}</td></tr>"
            for v in ordered
        )
        tables.append(
            f"<details open><summary>{html.escape(stem)}</summary><table><tr><th>step</th>{head}"
            f"<th>all</th></tr>{rows}</table></details>"
        )
    return "<h2>Per prompt</h2>" + "".join(tables) if tables else ""


def _leaderboard(run: RunData) -> str:
    board = run.leaderboard
    if not board or not board.get("rows"):
        return ""
    rows = board["rows"]
    columns = [c for c in ("name", "kind", "step", "epoch") if any(c in r for r in rows)]
    ranked = board.get("ranked_by")
    columns += [
        c for c in rows[0] if c not in columns and (c == ranked or c.startswith("z/") or c.endswith("ci_low"))
    ]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join(
        f"<tr class='{'best' if r.get('name') == board.get('best') else ''}'>"
        + "".join(f"<td>{_number(r.get(c))}</td>" for c in columns)
        + "</tr>"
        for r in rows
    )
    comparison = board.get("comparison")
    note = ""
    if isinstance(comparison, dict):
        note = (
            "<p>best vs runner-up: "
            + html.escape(
                ", ".join(f"{k} {v}" for k, v in comparison.items() if not isinstance(v, (dict, list)))
            )
            + "</p>"
        )
    best = html.escape(str(board.get("best")))
    return f"<h2>Leaderboard</h2><p>best: <b>{best}</b></p><table><tr>{head}</tr>{body}</table>{note}"


RATING_SCRIPT = """
function exportRatings() {
  const rater = document.getElementById("rater").value.trim() || "rater";
  const lines = ["image,rating,rater"];
  for (const input of document.querySelectorAll("input.rating:checked")) {
    lines.push([JSON.stringify(input.name), input.value, JSON.stringify(rater)].join(","));
  }
  const text = lines.join("\\n") + "\\n";
  document.getElementById("ratings-csv").value = text;
  const link = document.createElement("a");
  link.href = URL.createObjectURL(new Blob([text], {type: "text/csv"}));
  link.download = "ratings.csv";
  link.click();
}
document.getElementById("export-ratings").addEventListener("click", exportRatings);
"""


def _rating(run: RunData, out: Path) -> str:
    """Every scored image with 1-5 buttons; the export is the ratings file of ``sdcallbacks calibrate``
    (image ids relative to the run folder). Images are linked, not embedded: they stay in the run."""
    cells = []
    for record in run.images:
        path = Path(str(record.get("image_path", "")))
        if not path.is_file():
            continue
        source = Path(os.path.relpath(path.resolve(), out.parent.resolve())).as_posix()
        name = html.escape(image_id(path, run.folder), quote=True)
        buttons = "".join(
            f"<label><input type='radio' class='rating' name='{name}' value='{v}'>{v}</label>"
            for v in range(1, 6)
        )
        caption = html.escape(
            f"step {record.get('step')} {record.get('variant')}: {record.get('prompt', '')}"
        )
        cells.append(
            f"<figure class='rate'><img loading='lazy' src='{html.escape(source, quote=True)}' "
            f"alt='{name}' title='{caption}'><figcaption>{buttons}</figcaption></figure>"
        )
    if not cells:
        return ""
    return (
        "<h2>Rate the images</h2><p>Rate what you see from 1 (bad) to 5 (good), then export the ratings "
        "for <code>sdcallbacks calibrate --ratings ratings.csv --scores metrics.jsonl</code>.</p>"
        "<p><label>rater <input id='rater' value='me'></label> "
        "<button id='export-ratings' type='button'>Export ratings.csv</button></p>"
        f"<div class='rates'>{''.join(cells)}</div>"
        "<textarea id='ratings-csv' rows='4' cols='80' readonly></textarea>"
        f"<script>{RATING_SCRIPT}</script>"
    )


def _tags(table: TagTable, plot: Path | None, what: str, column: str, counted: str) -> str:
    if not table:
        return ""
    keys = sorted({n for rows in table.values() for n in rows})
    head = "".join(f"<th>{n}</th>" for n in keys)
    body = "".join(
        f"<tr><td>{html.escape(label)}</td>"
        + "".join(
            f"<td>{_number(rows[n][0])} ({rows[n][1]})</td>" if n in rows else "<td>–</td>" for n in keys
        )
        + "</tr>"
        for label, rows in table.items()
    )
    image = f"<img class='curve' src='{_data_uri(plot)}' alt='tag accuracy by {what}'>" if plot else ""
    return (
        f"<h2>Tag accuracy by {what}</h2>"
        f"<table><tr><th>{column}</th>{head}</tr>{body}</table>"
        f"<p>share of tags found ({counted})</p>" + image
    )
