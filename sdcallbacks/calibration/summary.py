"""A calibration as a console table, ``calibration.json`` and ``score.yaml`` (the ``score:`` block to
paste into a run config, with ``monitor: val/score``)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import yaml

from sdcallbacks.calibration.fit import Calibration


def _interval(entry: dict) -> str:
    return f"{entry['value']:.3f} [{entry['ci_low']:.3f}, {entry['ci_high']:.3f}]"


def summary_markdown(result: Calibration) -> str:
    lines = [f"{result.ratings} {result.kind} ratings of {result.images} images"]
    if result.kind == "likert":
        lines += ["", "| metric | Spearman [95% CI] | Kendall [95% CI] | mapped MAE (median's) | n |"]
        lines.append("| --- | --- | --- | --- | --- |")
        for name, entry in result.metrics.items():
            if "skipped" in entry:
                lines.append(f"| {name} | skipped: {entry['skipped']} | | | {entry['n']} |")
                continue
            mapping = entry["mapping"]
            lines.append(
                f"| {name} | {_interval(entry['spearman'])} | {_interval(entry['kendall'])} | "
                f"{mapping['cv_mae']:.3f} ({mapping['median_mae']:.3f}) | {entry['n']} |"
            )
        if result.raters:
            lines += ["", "rater agreement with the others (leave-one-out Spearman, the ceiling):"]
            lines += [f"  {rater}: {value:.3f}" for rater, value in result.raters.items()]
    else:
        lines += ["", "| metric | picks it orders the same way [95% CI] | n |", "| --- | --- | --- |"]
        for name, entry in result.metrics.items():
            if "skipped" in entry:
                lines.append(f"| {name} | skipped: {entry['skipped']} | {entry['n']} |")
            else:
                lines.append(f"| {name} | {_interval(entry['agreement'])} | {entry['n']} |")
    for rater, why in result.skipped_raters.items():
        lines.append(f"  skipped rater {rater}: {why}")
    if not result.score_block:
        lines += ["", "no composite fitted: no metric scored every rated image with some spread"]
    if result.composite and result.score_block:
        quality = (
            f"cross-validated Spearman {result.composite['cv_spearman']:.3f}"
            if result.kind == "likert"
            else f"cross-validated share of picks predicted {result.composite['cv_accuracy']:.3f}"
        )
        lines += [
            "",
            f"fitted composite ({quality}):",
            yaml.safe_dump({"score": result.score_block}).rstrip(),
        ]
    return "\n".join(lines)


def write_calibration(result: Calibration, folder: Path) -> dict[str, Path]:
    """``calibration.json`` always; ``score.yaml`` only with a fitted composite (an empty ``score:`` with
    ``monitor: val/score`` would be a config that cannot run)."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {"calibration": folder / "calibration.json"}
    files["calibration"].write_text(json.dumps(dataclasses.asdict(result), indent=2) + "\n", encoding="utf-8")
    if not result.score_block:
        return files
    files["score"] = folder / "score.yaml"
    block = {"score": result.score_block, "monitor": "val/score", "mode": "max"}
    files["score"].write_text(
        "# Fitted by sdcallbacks calibrate to your ratings: paste into the run config.\n"
        + yaml.safe_dump(block, sort_keys=False),
        encoding="utf-8",
    )
    return files
