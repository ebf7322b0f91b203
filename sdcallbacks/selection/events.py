"""Overfitting signals: named rules checked at every validation (``events:`` in the config).

A ``when`` rule holds while its threshold rule does (memorisation: the copy score rises above a value;
collapse: diversity falls below a share of the baseline; frying: the CLIP-T of prompts without the trigger
word falls below the baseline's; prompt following: tag accuracy of held-out prompts falls). An ``upturn``
rule holds once the moving mean of its key over ``window`` validations has turned: risen more than
``min_delta`` above its lowest moving mean so far (``mode: min``, as ``val_loss``), or fallen below its
highest (``mode: max``). A rule that cannot be told (key not logged, NaN, no baseline) does not hold.

Each validation logs ``val/events/<name>`` (1 while the rule holds, else 0); the first validation at
which it holds is the event's step, kept for resume, written as an event line and to the run summary
(``events/<name>/step``). An event named in ``early_stopping.on_events`` stops training when it fires.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from sdcallbacks.config.rules import ThresholdRule
from sdcallbacks.config.schema import EventRule
from sdcallbacks.prompts.library import PromptSpec


@dataclass(frozen=True)
class Fired:
    name: str
    step: int
    description: str


def _stem(key: str) -> str:
    return key[: -len("/mean")] if key.endswith("/mean") else key


class EventSignal:
    """One named rule and its history (the moving means of an upturn rule)."""

    def __init__(self, name: str, rule: EventRule, prompts: list[PromptSpec]):
        self.name = name
        self.rule = rule
        self.threshold = ThresholdRule.parse(rule.when) if rule.when else None
        self.key = rule.key
        self.prompt_names = self._select(rule, prompts)
        self.history: list[float] = []  # the upturn key's values, one per validation that logged it
        self.extreme: float | None = None  # lowest (min) or highest (max) moving mean so far

    @staticmethod
    def _select(rule: EventRule, prompts: list[PromptSpec]) -> list[str] | None:
        if rule.prompts is not None:
            return list(rule.prompts)
        if rule.prompts_without is not None:
            word = re.compile(rf"\b{re.escape(rule.prompts_without)}\b", re.IGNORECASE)
            return [p.name for p in prompts if not word.search(p.prompt)]
        return None

    def value(self, values: dict[str, float]) -> float | None:
        """The rule's value: the key, or the mean of the selected prompts' per-prompt means."""
        if self.prompt_names is None:
            return values.get(self.key)
        stem = _stem(self.key)
        means = [values.get(f"{stem}/prompt/{name}") for name in self.prompt_names]
        if not means or any(m is None for m in means):
            return None
        return sum(means) / len(means)  # type: ignore[arg-type]

    def check(self, values: dict[str, float], baseline: dict[str, float] | None) -> tuple[bool, str]:
        """(holds, why) for one validation's values."""
        value = self.value(values)
        if self.threshold is not None:
            base = self.value(baseline) if baseline else None
            return bool(self.threshold.holds(value, base)), self.threshold.describe(value, base)
        if value is None or not math.isfinite(value):
            return False, f"{self.key} not logged"
        self.history.append(float(value))
        window = self.rule.window
        if len(self.history) < window:
            return False, f"{self.key}: {len(self.history)} of {window} values for the moving mean"
        moving = sum(self.history[-window:]) / window
        sign = 1.0 if self.rule.mode == "min" else -1.0
        if self.extreme is None or sign * (moving - self.extreme) < 0:
            self.extreme = moving
        turned = sign * (moving - self.extreme) > self.rule.min_delta
        word = "lowest" if self.rule.mode == "min" else "highest"
        return turned, f"{self.key} moving mean {moving:.6g} (window {window}) vs {word} {self.extreme:.6g}"


class OverfittingEvents:
    def __init__(self, rules: dict[str, EventRule], prompts: list[PromptSpec]):
        self.signals = [EventSignal(name, rule, prompts) for name, rule in rules.items()]
        self.fired: dict[str, int] = {}  # name -> step it first held

    def __bool__(self) -> bool:
        return bool(self.signals)

    def check(
        self, step: int, values: dict[str, float], baseline: dict[str, float] | None
    ) -> tuple[dict[str, float], list[Fired]]:
        """``val/events/<name>`` scalars for this validation, and the events firing for the first time."""
        scalars: dict[str, float] = {}
        new: list[Fired] = []
        for signal in self.signals:
            holds, why = signal.check(values, baseline)
            scalars[f"val/events/{signal.name}"] = 1.0 if holds else 0.0
            if holds and signal.name not in self.fired:
                self.fired[signal.name] = step
                new.append(Fired(signal.name, step, why))
        return scalars, new

    def summary(self) -> dict[str, Any]:
        return {f"events/{name}/step": step for name, step in self.fired.items()}

    def state_dict(self) -> dict[str, Any]:
        return {
            "fired": dict(self.fired),
            "history": {s.name: list(s.history) for s in self.signals},
            "extreme": {s.name: s.extreme for s in self.signals},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.fired = {str(k): int(v) for k, v in state.get("fired", {}).items()}
        for signal in self.signals:
            signal.history = [float(v) for v in state.get("history", {}).get(signal.name, [])]
            signal.extreme = state.get("extreme", {}).get(signal.name)
