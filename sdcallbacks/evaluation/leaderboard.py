"""The leaderboard of an evaluation: the base model and every checkpoint, on the same prompts and seeds.

Per row (``leaderboard.csv``, ``leaderboard.json``): the checkpoint, its step and epoch, and for every
per-image metric key ``k`` the validation's own aggregates ``val/k/mean``, ``val/k/ci_low``,
``val/k/ci_high`` (95% bootstrap interval of the mean, as the callback logs them), ``z/k``: the key
standardised per prompt against the base model (GhostReview's method, :mod:`~sdcallbacks.aggregation.
composite`), signed so that larger is better; set-level keys ``val/k``; and ``composite``: the config's
``val/score`` where ``score`` is set, else the mean of ``z`` over each metric's headline keys (those
without a ``/``). The base model's ``z`` are 0 by construction.

The best checkpoint is the best by ``monitor`` (``mode``), or by ``composite`` without a monitor; it is
compared with the runner-up by a paired bootstrap over their common (prompt, seed) pairs on the
monitored per-image key (:mod:`~sdcallbacks.aggregation.paired`).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sdcallbacks.aggregation.composite import standardised
from sdcallbacks.aggregation.paired import PairedComparison, paired_bootstrap
from sdcallbacks.aggregation.records import ImageRecord
from sdcallbacks.metrics.base import KeySpec

AGGREGATE_COLUMNS = ("mean", "ci_low", "ci_high")
LEADERBOARD_FILES = {"csv": "leaderboard.csv", "json": "leaderboard.json", "markdown": "leaderboard.md"}


@dataclass
class ScoredModel:
    """One scored model: the base (``kind="base"``) or a checkpoint, with its validation's records and
    aggregates (``val/...`` as the callback logs them) and set values."""

    name: str
    kind: str
    path: str | None
    step: int | None
    epoch: int | None
    values: dict[str, float]
    records: list[ImageRecord]
    sets: dict[str, float | None] = field(default_factory=dict)

    @property
    def position(self) -> int:
        return self.step if self.step is not None else (self.epoch if self.epoch is not None else 0)


@dataclass
class Leaderboard:
    rows: list[dict[str, Any]]
    columns: list[str]
    ranked_by: str
    mode: str
    best: str | None
    runner_up: str | None
    comparison: PairedComparison | None
    skipped: list[dict[str, str]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """The best checkpoint for the trackers' run summary."""
        row = next((r for r in self.rows if r["name"] == self.best), None)
        if row is None:
            return {}
        return {
            f"best/{self.ranked_by}": row.get(self.ranked_by),
            "best/step": row.get("step"),
            "best/epoch": row.get("epoch"),
            "best/path": row.get("path"),
        }

    def to_csv(self) -> str:
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=self.columns, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        for row in self.rows:
            writer.writerow({k: _csv_value(row.get(k)) for k in self.columns})
        return out.getvalue()

    def to_json(self) -> dict[str, Any]:
        return {
            "ranked_by": self.ranked_by,
            "mode": self.mode,
            "best": self.best,
            "runner_up": self.runner_up,
            "comparison": self.comparison.to_json() if self.comparison else None,
            "rows": [{k: _json_value(v) for k, v in row.items()} for row in self.rows],
            "skipped": self.skipped,
        }

    def to_markdown(self) -> str:
        key = self.ranked_by
        headline = [c for c in self.columns if c.endswith("/mean") and c != key][:3]
        header = ["", "checkpoint", "step", "epoch", f"{key} [95% CI]", "composite", *headline]
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for row in self.rows:
            mark = "best" if row["name"] == self.best else ("base" if row["kind"] == "base" else "")
            ranked = _fmt(row.get(key))
            low, high = row.get(_ci(key, "ci_low")), row.get(_ci(key, "ci_high"))
            if low is not None and high is not None:
                ranked += f" [{_fmt(low)}, {_fmt(high)}]"
            cells = [mark, row["name"], _fmt(row.get("step")), _fmt(row.get("epoch")), ranked]
            cells += [_fmt(row.get("composite")), *(_fmt(row.get(c)) for c in headline)]
            lines.append("| " + " | ".join(cells) + " |")
        if self.comparison is not None:
            c = self.comparison
            lines.append("")
            lines.append(
                f"{self.best} vs {self.runner_up} on {c.key}, {c.pairs} paired images: difference "
                f"{c.difference:+.4f} [95% CI {c.ci_low:+.4f}, {c.ci_high:+.4f}]; the order flips in "
                f"{100 * c.flip_rate:.1f}% of {c.resamples} resamples"
            )
        return "\n".join(lines)

    def write(self, folder: Path) -> dict[str, Path]:
        """The three files (:data:`LEADERBOARD_FILES`), each replaced whole (written aside, then renamed)."""
        texts = {
            "csv": self.to_csv(),
            "json": json.dumps(self.to_json(), indent=2),
            "markdown": self.to_markdown() + "\n",
        }
        paths = {}
        for kind, name in LEADERBOARD_FILES.items():
            paths[kind] = Path(folder) / name
            staging = paths[kind].with_name(f".{name}.tmp")
            staging.write_text(texts[kind], encoding="utf-8")
            os.replace(staging, paths[kind])
        return paths


def _ci(key: str, bound: str) -> str:
    return key[: -len("/mean")] + f"/{bound}" if key.endswith("/mean") else f"{key}/{bound}"


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4f}" if math.isfinite(value) else str(value)
    return str(value)


def _csv_value(value: Any) -> Any:
    return "" if value is None else value


def _json_value(value: Any) -> Any:
    return None if isinstance(value, float) and not math.isfinite(value) else value


def per_image_key(monitor: str) -> str | None:
    """``val/<key>/mean`` -> ``<key>``: the per-image key whose mean is monitored (None for others)."""
    if monitor.startswith("val/") and monitor.endswith("/mean"):
        return monitor[len("val/") : -len("/mean")]
    return None


def build_leaderboard(
    models: list[ScoredModel],
    specs: dict[str, KeySpec],
    monitor: str | None,
    mode: str,
    skipped: list[dict[str, str]] | None = None,
    seed: int = 0,
) -> Leaderboard:
    """Rows for ``models`` (the base first, then checkpoints in training order), the best checkpoint
    and its paired comparison with the runner-up."""
    base = next((m for m in models if m.kind == "base"), None)
    image_keys = sorted({k for m in models for r in m.records for k in r.scores})
    set_keys = sorted({k for m in models for k in m.sets})
    columns = ["name", "kind", "step", "epoch", "path"]
    columns += [f"val/{k}/{c}" for k in image_keys for c in AGGREGATE_COLUMNS]
    columns += [f"val/{k}" for k in set_keys]
    columns += [f"z/{k}" for k in image_keys if k in specs] + ["composite"]
    rows = []
    for model in models:
        row: dict[str, Any] = {
            "name": model.name,
            "kind": model.kind,
            "step": model.step,
            "epoch": model.epoch,
            "path": model.path,
        }
        row.update({c: model.values.get(c) for c in columns if c.startswith("val/")})
        z = _z_scores(model, base, image_keys, specs)
        row.update({f"z/{k}": v for k, v in z.items()})
        row["composite"] = model.values.get("val/score", _headline_mean(z))
        rows.append(row)
    ranked_by = monitor or "composite"
    candidates = [r for r in rows if r["kind"] != "base" and _finite(r.get(ranked_by))]
    order = sorted(candidates, key=lambda r: r[ranked_by], reverse=mode == "max")  # stable: earliest first
    best, runner_up = [*order, None, None][:2]
    comparison = None
    key = per_image_key(ranked_by) if monitor else None
    if best is not None and runner_up is not None and key is not None:
        by_name = {m.name: m for m in models}
        higher = specs[key].higher_is_better if key in specs else mode == "max"
        comparison = paired_bootstrap(
            _pair_scores(by_name[best["name"]], key),
            _pair_scores(by_name[runner_up["name"]], key),
            key,
            higher_is_better=mode == "max" if monitor else higher,
            seed=seed,
        )
    return Leaderboard(
        rows=rows,
        columns=columns,
        ranked_by=ranked_by,
        mode=mode,
        best=best["name"] if best else None,
        runner_up=runner_up["name"] if runner_up else None,
        comparison=comparison,
        skipped=skipped or [],
    )


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _pair_scores(model: ScoredModel, key: str) -> dict[tuple[str, int], float]:
    return {r.pair: r.scores[key] for r in model.records if r.scores.get(key) is not None}


def _z_scores(
    model: ScoredModel, base: ScoredModel | None, keys: list[str], specs: dict[str, KeySpec]
) -> dict[str, float]:
    if base is None:
        return {}
    out = {}
    for key in keys:
        if key not in specs:
            continue
        z = standardised(model.records, base.records, key)
        if z is not None:
            out[key] = z if specs[key].higher_is_better else -z
    return out


def _headline_mean(z: dict[str, float]) -> float | None:
    headline = [v for k, v in z.items() if "/" not in k]
    return sum(headline) / len(headline) if headline else None
