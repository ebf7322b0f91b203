"""Threshold rules on a logged key, as gates and events write them: ``KEY OP BOUND``.

``KEY`` is a logged key; without a leading ``val/`` it gets one (``identity/mean`` is ``val/identity/mean``).
``OP`` is ``>=``, ``<=``, ``>`` or ``<``. ``BOUND`` is absolute or relative to the baseline validation
(the base model's value of the same key):

* ``0.5``: absolute;
* ``0.8 * baseline`` (or ``0.8 × baseline``, ``baseline * 0.8``): a share of the baseline;
* ``baseline - 0.2`` (or ``baseline + 0.1``, ``baseline``, ``−`` for ``-``): an offset from the baseline.
"""

from __future__ import annotations

import math
import operator
import re
from dataclasses import dataclass
from typing import Literal

_UNSIGNED = r"(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?"
_NUMBER = rf"[+-]?{_UNSIGNED}"
_RULE = re.compile(r"^\s*(?P<key>[^\s<>=]+)\s*(?P<op><=|>=|<|>)\s*(?P<bound>.+?)\s*$")
_RATIO = re.compile(rf"^(?:(?P<a>{_NUMBER})\s*\*\s*baseline|baseline\s*\*\s*(?P<b>{_NUMBER}))$")
_OFFSET = re.compile(rf"^baseline(?:\s*(?P<sign>[+-])\s*(?P<d>{_UNSIGNED}))?$")
_OPS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt}


@dataclass(frozen=True)
class ThresholdRule:
    key: str
    op: Literal[">=", "<=", ">", "<"]
    value: float  # the absolute bound, the share of the baseline, or the offset from it
    relative: Literal["absolute", "ratio", "offset"] = "absolute"
    text: str = ""

    @classmethod
    def parse(cls, text: str) -> ThresholdRule:
        """A rule from its text; a ``ValueError`` that quotes it and shows the grammar."""
        match = _RULE.match(text.replace("×", "*").replace("−", "-"))
        if match is None:
            raise ValueError(f"{text!r}: expected 'KEY OP BOUND', e.g. 'identity/mean >= 0.5'")
        key, op, bound = match["key"], match["op"], match["bound"].strip()
        key = key if key.startswith("val/") else f"val/{key}"
        if re.fullmatch(_NUMBER, bound):
            return cls(key, op, float(bound), "absolute", text)
        if ratio := _RATIO.match(bound):
            return cls(key, op, float(ratio["a"] or ratio["b"]), "ratio", text)
        if offset := _OFFSET.match(bound):
            delta = float(offset["d"] or 0.0) * (-1.0 if offset["sign"] == "-" else 1.0)
            return cls(key, op, delta, "offset", text)
        raise ValueError(
            f"{text!r}: bound {bound!r} is not a number, 'F * baseline' or 'baseline +/- D' "
            "(e.g. '0.5', '0.8 * baseline', 'baseline - 0.2')"
        )

    @property
    def needs_baseline(self) -> bool:
        return self.relative != "absolute"

    def bound(self, baseline: float | None) -> float | None:
        """The absolute bound; None for a relative rule without a (finite) baseline value."""
        if self.relative == "absolute":
            return self.value
        if baseline is None or not math.isfinite(baseline):
            return None
        return self.value * baseline if self.relative == "ratio" else baseline + self.value

    def holds(self, value: float | None, baseline: float | None = None) -> bool | None:
        """Whether ``value`` satisfies the rule; None when it cannot tell (no value, NaN, no baseline)."""
        bound = self.bound(baseline)
        if value is None or bound is None or not math.isfinite(value):
            return None
        return bool(_OPS[self.op](value, bound))

    def describe(self, value: float | None, baseline: float | None = None) -> str:
        """``val/identity/mean = 0.41, needs >= 0.5`` (the bound resolved against the baseline)."""
        bound = self.bound(baseline)
        shown = "not logged" if value is None else f"= {value:.6g}"
        if bound is None:
            return (
                f"{self.key} {shown}, needs {self.op} {self.text.split(self.op, 1)[-1].strip()} (no baseline)"
            )
        return f"{self.key} {shown}, needs {self.op} {bound:.6g}"
