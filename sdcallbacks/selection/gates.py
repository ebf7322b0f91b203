"""Gates: floors and ceilings a validation must meet to be eligible for best and top-k.

Each gate is a :class:`~sdcallbacks.config.rules.ThresholdRule` on one logged key, absolute or relative to
the baseline validation's value of that key. A gate that cannot be told (the key not logged, a NaN, a
relative gate before any baseline) fails: an unmeasured validation is never kept as best. An ineligible
validation is still logged, with each failing gate; ``early_stopping.check_ineligible`` says whether early
stopping checks it.
"""

from __future__ import annotations

from sdcallbacks.config.rules import ThresholdRule


class Gates:
    def __init__(self, rules: list[ThresholdRule]):
        self.rules = rules

    def failures(self, values: dict[str, float], baseline: dict[str, float] | None) -> list[str]:
        """A line per failing gate (``val/identity/mean = 0.41, needs >= 0.5``); empty: eligible."""
        baseline = baseline or {}
        out = []
        for rule in self.rules:
            value, base = values.get(rule.key), baseline.get(rule.key)
            if not rule.holds(value, base):
                out.append(rule.describe(value, base))
        return out
