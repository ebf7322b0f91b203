"""What a report shows, read from the files a run leaves: ``metrics.jsonl`` (aggregates, image records,
events), the validation grids under ``samples/`` and, for ``sdcallbacks evaluate``, ``leaderboard.json``.

The callback, ``evaluate`` and ``watch`` all write this layout, so one reader serves the three.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sdcallbacks.outputs.writer import read_metrics
from sdcallbacks.selection.early_stopping import StoppingReason

# Per-metric statistics beside ``/mean`` in the aggregates; the rest of a key is the metric.
STATISTICS = {"mean", "std", "n", "skipped", "ci_low", "ci_high", "good_rate", "delta"}
# Summary keys beside best/<monitor>.
NOT_MONITORED = ("best/step", "best/path", "best/epoch", "best/lora_scale")
# Costs of a validation, not metrics of the model.
COSTS = re.compile(r"^val/(ema/)?(time|rss_mb|peak_rss_mb|gpu)")


class ReportError(ValueError):
    """A run folder that cannot be reported on; the message names the file (and line)."""


@dataclass
class Validation:
    step: int
    variant: str  # "model", "ema", or "base" (the baseline validation)
    values: dict[str, float]
    grid: Path | None


@dataclass
class RunData:
    folder: Path
    validations: list[Validation]
    images: list[dict[str, Any]]  # the image records
    events: list[dict[str, Any]]
    leaderboard: dict[str, Any] | None = None
    torn_lines: list[int] = field(default_factory=list)  # a crash mid-write: skipped, counted

    @property
    def baseline(self) -> Validation | None:
        return next((v for v in self.validations if v.variant == "base"), None)

    def series(self, variant: str = "model") -> list[Validation]:
        return sorted((v for v in self.validations if v.variant == variant), key=lambda v: v.step)

    def metrics(self) -> list[str]:
        """Keys worth a curve, in first-seen order: each per-image metric's ``/mean`` and each set-level
        value (``val/kid``, ``val/score``); not statistics, per-prompt values or costs."""
        keys: dict[str, None] = {}
        for validation in self.validations:
            for key in validation.values:
                if COSTS.match(key) or "/prompt/" in key:
                    continue
                last = key.rsplit("/", 1)[-1]
                if last == "mean" or (last not in STATISTICS and f"{key}/mean" not in validation.values):
                    keys.setdefault(key, None)
        return list(keys)

    @property
    def monitor(self) -> str | None:
        """The key best steps were chosen by: the selection events' ``best/<key>``."""
        for key in self.selection or {}:
            if key.startswith("best/") and key not in NOT_MONITORED:
                return key[len("best/") :]
        return None

    @property
    def selection(self) -> dict[str, Any] | None:
        """The last decision recorded (best step, stopping reason), or None."""
        decisions = [e for e in self.events if e.get("event") == "selection"]
        return decisions[-1] if decisions else None

    @property
    def stop(self) -> tuple[int, str] | None:
        """(step, reason) of an early stop."""
        for event in self.events:
            if event.get("event") == "early_stop":
                return int(event["step"]), str(event.get("reason", ""))
            reason = event.get("early_stop/reason")
            if event.get("event") == "selection" and reason not in (None, StoppingReason.NOT_STOPPED.value):
                return int(event["step"]), str(reason)
        return None


def read_run(folder: str | Path) -> RunData:
    folder = Path(folder)
    path = folder / "metrics.jsonl"
    if not path.is_file():
        raise ReportError(f"{path}: not found (expected the output folder of a run, evaluate or watch)")
    torn: list[int] = []
    try:
        records = read_metrics(path, torn)
    except (ValueError, UnicodeDecodeError) as err:
        raise ReportError(str(err)) from None
    validations, images, events = [], [], []
    for number, record in enumerate(records, start=1):
        kind = record.get("type") if isinstance(record, dict) else None
        try:
            if kind == "aggregate":
                step, variant = int(record["step"]), str(record["variant"])
                values = {k: float(v) for k, v in record["values"].items() if isinstance(v, (int, float))}
                validations.append(Validation(step, variant, values, _grid(folder, step, variant)))
            elif kind == "image":
                images.append(record)
            elif kind == "event":
                events.append(record)
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise ReportError(f"{path}: record {number} ({kind}): missing or malformed {err}") from None
    if not validations:
        raise ReportError(f"{path}: no validation recorded yet")
    board = None
    board_path = folder / "leaderboard.json"
    if board_path.is_file():
        try:
            board = json.loads(board_path.read_text(encoding="utf-8"))
        except ValueError as err:
            raise ReportError(f"{board_path}: not JSON ({err})") from None
    return RunData(folder, validations, images, events, board, torn)


def _grid(folder: Path, step: int, variant: str) -> Path | None:
    suffix = "" if variant == "model" else f"_{variant}"
    path = folder / "samples" / f"step_{step:07d}{suffix}" / "grid.png"
    return path if path.is_file() else None
