"""Keeps the weights of the best validations (Lightning ``ModelCheckpoint`` semantics).

* ``save_top_k``: the ``k`` best validations by ``monitor`` stay on disk (``1`` by default, ``0`` none,
  ``-1`` all). A validation enters the top k while fewer than ``k`` are kept, or when it is **strictly**
  better than the worst kept one (no ``min_delta``), which is then deleted.
* NaN is never best and never enters a top ``k`` (with ``-1`` it is kept, as every validation is, but is
  never ``best_model_path``). Lightning keeps a NaN while fewer than ``k`` are stored; here it is not.
* ``save_last``: the latest validation's weights are also kept in ``last/``, replaced each time.
* Each folder is written to a temporary folder first and renamed into place, so a crash mid-write never
  leaves a half-written checkpoint under a final name; the staging folders such a crash leaves are removed
  by :meth:`ModelCheckpoint.remove_orphans` when the next run starts.

Folders: ``<dirpath>/step_<step>`` and ``<dirpath>/last``; what is inside is
:func:`~sdcallbacks.selection.snapshots.save_weights`'s (a LoRA in diffusers format, else the UNet).
Exposes ``best_model_path``, ``best_model_score``, ``best_step``, ``best_k_models`` and
``last_model_path``; ``state_dict()`` round-trips all of it for resume.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import uuid
from pathlib import Path
from typing import Any, Literal

from sdcallbacks.sampling.modules import TrainingModules
from sdcallbacks.selection.snapshots import WeightsWriter, save_weights

_STAGING = re.compile(r"\.(tmp|old)-[0-9a-f]{32}")
_CHECKPOINT = re.compile(r"step_\d+|last")


def atomic_write(weights: TrainingModules | WeightsWriter, final: Path) -> None:
    staging = final.parent / f".tmp-{uuid.uuid4().hex}"  # names matched by _STAGING
    previous = final.parent / f".old-{uuid.uuid4().hex}"
    try:
        save_weights(weights, staging)
        if final.exists():
            os.replace(final, previous)  # a folder cannot be renamed over a non-empty one
        os.replace(staging, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(previous, ignore_errors=True)


class ModelCheckpoint:
    def __init__(
        self,
        dirpath: Path | str,
        monitor: str,
        mode: Literal["min", "max"] = "max",
        save_top_k: int = 1,
        save_last: bool = False,
    ):
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        if save_top_k < -1:
            raise ValueError(f"save_top_k must be >= -1, got {save_top_k}")
        self.dirpath = Path(dirpath)
        self.monitor = monitor
        self.mode = mode
        self.save_top_k = save_top_k
        self.save_last = save_last
        self.best_k_models: dict[str, float] = {}  # path -> score
        self.steps: dict[str, int] = {}  # path -> step
        self.best_model_path: str | None = None
        self.last_model_path: str | None = None

    def _better(self, a: float, b: float) -> bool:
        if math.isnan(a):
            return False
        if math.isnan(b):
            return True
        return a < b if self.mode == "min" else a > b

    @property
    def best_model_score(self) -> float | None:
        return self.best_k_models.get(self.best_model_path) if self.best_model_path else None

    @property
    def best_step(self) -> int | None:
        return self.steps.get(self.best_model_path) if self.best_model_path else None

    @property
    def kth_best_model_path(self) -> str | None:
        """The worst of the kept checkpoints (the one a better validation replaces)."""
        if not self.best_k_models:
            return None
        worst = None
        for path, score in self.best_k_models.items():
            if worst is None or self._better(self.best_k_models[worst], score):
                worst = path
        return worst

    def _enters_top_k(self, score: float) -> bool:
        if self.save_top_k == -1:
            return True
        if self.save_top_k == 0 or math.isnan(score):
            return False
        if len(self.best_k_models) < self.save_top_k:
            return True
        return self._better(score, self.best_k_models[self.kth_best_model_path])

    def update(
        self, score: float, step: int, modules: TrainingModules | WeightsWriter, eligible: bool = True
    ) -> bool:
        """Record one validation's ``score`` at ``step``; save what the settings ask for (from the live
        ``modules`` or a snapshot of the step's weights). Returns whether it became the new best. An
        ineligible validation (a gate failed) never enters the top k; ``save_last`` still keeps it."""
        score = float(score)
        was_best = self.best_model_path
        if eligible and self._enters_top_k(score):
            self.dirpath.mkdir(parents=True, exist_ok=True)
            path = self.dirpath / f"step_{step:07d}"
            atomic_write(modules, path)
            self.best_k_models[str(path)] = score
            self.steps[str(path)] = step
            if self.save_top_k > 0 and len(self.best_k_models) > self.save_top_k:
                self._delete(self.kth_best_model_path)
            finite = [p for p, s in self.best_k_models.items() if not math.isnan(s)]
            self.best_model_path = None
            for p in finite:
                if self.best_model_path is None or self._better(self.best_k_models[p], self.best_model_score):
                    self.best_model_path = p
        if self.save_last:
            self.dirpath.mkdir(parents=True, exist_ok=True)
            atomic_write(modules, self.dirpath / "last")
            self.last_model_path = str(self.dirpath / "last")
        return self.best_model_path is not None and self.best_model_path != was_best

    def _folders(self, pattern: re.Pattern[str]) -> list[Path]:
        if not self.dirpath.is_dir():
            return []
        return sorted(p for p in self.dirpath.iterdir() if p.is_dir() and pattern.fullmatch(p.name))

    def previous_checkpoints(self) -> list[Path]:
        """Checkpoint folders already in ``dirpath`` (``step_*``, ``last``), e.g. from an earlier run."""
        return self._folders(_CHECKPOINT)

    def remove_orphans(self) -> list[Path]:
        """Delete the staging folders (``.tmp-*``, ``.old-*``) a run killed mid-save left behind."""
        orphans = self._folders(_STAGING)
        for path in orphans:
            shutil.rmtree(path, ignore_errors=True)
        return orphans

    def _delete(self, path: str | None) -> None:
        if path is None:
            return
        self.best_k_models.pop(path, None)
        self.steps.pop(path, None)
        shutil.rmtree(path, ignore_errors=True)

    def state_dict(self) -> dict[str, Any]:
        return {
            "best_k_models": dict(self.best_k_models),
            "steps": dict(self.steps),
            "best_model_path": self.best_model_path,
            "last_model_path": self.last_model_path,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best_k_models = dict(state["best_k_models"])
        self.steps = dict(state["steps"])
        self.best_model_path = state["best_model_path"]
        self.last_model_path = state["last_model_path"]
