"""A stand-in for ``accelerate.Accelerator`` with the attributes the callback reads, for tests and benches
that must not create accelerate's process-wide singletons."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class AcceleratorStub:
    sync_gradients: bool = True
    is_main_process: bool = True
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    mixed_precision: str = "no"
    trackers: list[Any] = field(default_factory=list)
    process_index: int = 0
    num_processes: int = 1
    registered: list[Any] = field(default_factory=list)

    def register_for_checkpointing(self, *objects: Any) -> None:
        self.registered.extend(objects)
