"""The Pareto front: the eligible validations no other validation beats on every key at once.

Validation ``a`` dominates ``b`` when ``a`` is at least as good on every key (each in its own direction)
and strictly better on one. A new validation joins the front unless a member dominates it, and removes
the members it dominates. A validation missing a key, or with a non-finite value, or failing a gate,
never joins. Ties on every key both stay. The front is logged at every validation (``val/pareto/size``,
``val/pareto/on_front``) and kept for resume; with checkpoints on, each member's weights are kept in
``<checkpoint dirpath>/pareto/step_<step>`` and deleted when it leaves the front.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import Any, Literal

from sdcallbacks.sampling.modules import TrainingModules
from sdcallbacks.selection.checkpoint import atomic_write
from sdcallbacks.selection.snapshots import WeightsWriter


class ParetoFront:
    def __init__(self, keys: dict[str, Literal["min", "max"]], dirpath: Path | str | None = None):
        self.keys = keys
        self.dirpath = Path(dirpath) if dirpath is not None else None
        self.members: dict[int, dict[str, float]] = {}  # step -> its values of the keys
        self.paths: dict[int, str] = {}  # step -> its weights folder, when kept

    def point(self, values: dict[str, float]) -> dict[str, float] | None:
        point = {key: values.get(key) for key in self.keys}
        if any(v is None or not math.isfinite(v) for v in point.values()):
            return None
        return point  # type: ignore[return-value]

    def dominates(self, a: dict[str, float], b: dict[str, float]) -> bool:
        signs = {k: 1.0 if mode == "max" else -1.0 for k, mode in self.keys.items()}
        at_least = all(signs[k] * (a[k] - b[k]) >= 0 for k in self.keys)
        return at_least and any(signs[k] * (a[k] - b[k]) > 0 for k in self.keys)

    def update(
        self, step: int, values: dict[str, float], weights: TrainingModules | WeightsWriter | None = None
    ) -> bool:
        """Offer one eligible validation; whether it joined the front."""
        point = self.point(values)
        if point is None or any(self.dominates(m, point) for m in self.members.values()):
            return False
        for other in [s for s, m in self.members.items() if self.dominates(point, m)]:
            del self.members[other]
            path = self.paths.pop(other, None)
            if path is not None:
                shutil.rmtree(path, ignore_errors=True)
        self.members[step] = point
        if self.dirpath is not None and weights is not None:
            folder = self.dirpath / f"step_{step:07d}"
            folder.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(weights, folder)
            self.paths[step] = str(folder)
        return True

    def scalars(self, step: int) -> dict[str, float]:
        return {
            "val/pareto/size": float(len(self.members)),
            "val/pareto/on_front": float(step in self.members),
        }

    def summary(self) -> dict[str, Any]:
        return {"pareto/front": sorted(self.members)}

    def state_dict(self) -> dict[str, Any]:
        return {
            "members": {str(s): p for s, p in self.members.items()},
            "paths": {str(s): p for s, p in self.paths.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.members = {
            int(s): {k: float(v) for k, v in p.items()} for s, p in state.get("members", {}).items()
        }
        self.paths = {int(s): str(p) for s, p in state.get("paths", {}).items()}
