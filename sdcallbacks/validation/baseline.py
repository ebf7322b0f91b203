"""``Baseline``: the baseline validation's scores, which every later validation is compared with.

The baseline validation runs once, before the first training step (``sampling.baseline``), on the base
model (LoRA adapters disabled) or, without adapters, on the weights as they start. Its per-image records
give each later image its paired ``/delta`` (same prompt and seed) and the composite ``val/score`` its
per-prompt spread; its set values (KID, ``val_loss``) give the set metrics' deltas.
"""

from __future__ import annotations

from typing import Any

from sdcallbacks.aggregation.records import ImageRecord


class Baseline:
    def __init__(self) -> None:
        self.records: dict[str, list[ImageRecord]] = {}
        self.sets: dict[str, dict[str, float | None]] = {}

    def __bool__(self) -> bool:
        return bool(self.records)

    def store(self, variant: str, records: list[ImageRecord], sets: dict[str, float | None]) -> None:
        self.records[variant] = records
        self.sets[variant] = sets

    @property
    def variant(self) -> str:
        """The variant later validations compare with: ``base`` where it was recorded."""
        return "base" if "base" in self.records else "model"

    def reference(self) -> tuple[list[ImageRecord] | None, dict[str, float | None] | None]:
        """The records and set values to compare with (None, None before the baseline ran)."""
        return self.records.get(self.variant), self.sets.get(self.variant)

    def state_dict(self) -> dict[str, Any]:
        return {
            "records": {k: [vars(r) for r in v] for k, v in self.records.items()},
            "sets": self.sets,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.records = {k: [ImageRecord(**r) for r in v] for k, v in state["records"].items()}
        self.sets = dict(state["sets"])
