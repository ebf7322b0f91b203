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


TagTable = dict[str, dict[int, tuple[float, int]]]  # "base"/"step N" -> {x: (mean, count)}


def _tag_groups(run: RunData, step: int | None) -> dict[str, list[dict]]:
    """The tag details of the base model's images and of ``step``'s."""
    wanted = {"base": lambda r: r.get("variant") == "base"}
    if step is not None:
        wanted[f"step {step}"] = lambda r: r.get("variant") == "model" and r.get("step") == step
    groups: dict[str, list[dict]] = {}
    for label, chosen in wanted.items():
        details = [(r.get("details") or {}).get("tag_accuracy/tags") for r in run.images if chosen(r)]
        found = [d for d in details if isinstance(d, dict) and d.get("tags")]
        if found:
            groups[label] = found
    return groups


def _table(groups: dict[str, list[tuple[int, float]]]) -> TagTable:
    table: TagTable = {}
    for label, pairs in groups.items():
        by_x: dict[int, list[float]] = defaultdict(list)
        for x, value in pairs:
            by_x[x].append(value)
        table[label] = {x: (sum(v) / len(v), len(v)) for x, v in sorted(by_x.items())}
    return table


def tag_count_table(run: RunData, step: int | None) -> TagTable:
    """Tag accuracy (the share of the prompt's known tags found) by how many known tags the prompt has:
    {label: {tags: (mean over images, images)}}."""
    groups = _tag_groups(run, step)
    return _table(
        {
            label: [(len(d["tags"]), sum(map(bool, d["found"])) / len(d["tags"])) for d in details]
            for label, details in groups.items()
        }
    )


def tag_position_table(run: RunData, step: int | None) -> TagTable:
    """How often the tag at each position of the prompt (1 = first known tag) is found: {label:
    {position: (share found, tags)}}. Accuracy falls with prompt length and near CLIP's 77-token limit."""
    groups = _tag_groups(run, step)
    return _table(
        {
            label: [(i + 1, float(bool(hit))) for d in details for i, hit in enumerate(d["found"])]
            for label, details in groups.items()
        }
    )


def tag_plot(table: TagTable, path: Path, xlabel: str, title: str) -> Path | None:
    if not table:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=100)
    for label, rows in table.items():
        ax.plot(list(rows), [mean for mean, _ in rows.values()], marker="o", label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("tag accuracy")
    ax.set_ylim(-0.05, 1.05)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
