"""The report's plots, drawn with matplotlib (the ``[report]`` extra) into PNG files.

Each curve is one metric over training steps: the mean with its 95% CI band, the baseline (the base
model) as a dashed line, the best step and an early stop marked.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

from sdcallbacks.report.run_data import ReportError, RunData


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise ReportError(
            "sdcallbacks report draws its plots with matplotlib: pip install 'sdcallbacks[report]'"
        ) from None
    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def metric_curve(
    run: RunData, key: str, path: Path, best_step: int | None, stop: tuple[int, str] | None
) -> Path | None:
    """``key`` over the steps of the ``model`` validations; None when it has no finite value."""
    points = [(v.step, v.values.get(key)) for v in run.series()]
    points = [(s, y) for s, y in points if y is not None and math.isfinite(y)]
    if not points:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=100)
    steps = [s for s, _ in points]
    ax.plot(steps, [y for _, y in points], marker="o", color="tab:blue", label="model")
    stem = key[: -len("/mean")] if key.endswith("/mean") else key
    band = [(v.step, v.values.get(f"{stem}/ci_low"), v.values.get(f"{stem}/ci_high")) for v in run.series()]
    band = [(s, lo, hi) for s, lo, hi in band if lo is not None and hi is not None]
    if band:
        ax.fill_between(
            [s for s, _, _ in band],
            [lo for _, lo, _ in band],
            [hi for _, _, hi in band],
            color="tab:blue",
            alpha=0.2,
            label="95% CI",
        )
    base = run.baseline
    if base is not None and key in base.values and math.isfinite(base.values[key]):
        ax.axhline(base.values[key], color="grey", linestyle="--", label="base model")
    if best_step is not None:
        ax.axvline(best_step, color="tab:green", linestyle=":", label=f"best (step {best_step})")
    if stop is not None:
        ax.axvline(stop[0], color="tab:red", linestyle="-.", label=f"stopped: {stop[1]}")
    ax.set_xlabel("step")
    ax.set_title(key)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", loc="best")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def tag_count_table(run: RunData, step: int | None) -> dict[str, dict[int, tuple[float, int]]]:
    """Tag accuracy by the number of tags in the prompt: {"base"/"step N": {tags: (mean, images)}}."""
    wanted = {"base": lambda r: r.get("variant") == "base"}
    if step is not None:
        wanted[f"step {step}"] = lambda r: r.get("variant") == "model" and r.get("step") == step
    table: dict[str, dict[int, tuple[float, int]]] = {}
    for label, chosen in wanted.items():
        groups: dict[int, list[float]] = defaultdict(list)
        for record in run.images:
            value = (record.get("scores") or {}).get("tag_accuracy")
            if chosen(record) and isinstance(value, (int, float)) and math.isfinite(value):
                tags = [t for t in str(record.get("prompt", "")).split(",") if t.strip()]
                groups[len(tags)].append(float(value))
        if groups:
            table[label] = {n: (sum(v) / len(v), len(v)) for n, v in sorted(groups.items())}
    return table


def tag_count_plot(table: dict[str, dict[int, tuple[float, int]]], path: Path) -> Path | None:
    if not table:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=100)
    for label, rows in table.items():
        ax.plot(list(rows), [mean for mean, _ in rows.values()], marker="o", label=label)
    ax.set_xlabel("tags in the prompt")
    ax.set_ylabel("tag accuracy")
    ax.set_ylim(-0.05, 1.05)
    ax.set_title("Tag accuracy by the number of prompted tags")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
