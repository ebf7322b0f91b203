"""Exact restore of every submodule's train/eval mode (Lightning's ``_ModuleMode``).

Pipelines never call ``.eval()``; a LoRA dropout left in train mode eats global RNG and makes
same-seed images differ. Calling ``.train()`` afterwards would be wrong too: frozen parts of a model
are often kept in eval mode on purpose. So each submodule's own flag is recorded and put back.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch


class ModuleModes:
    """Recorded ``.training`` flags of all submodules of some modules."""

    def __init__(self, modules: Iterable[torch.nn.Module]):
        self._flags = [(m, m.training) for root in modules for m in root.modules()]

    def restore(self) -> None:
        for module, training in self._flags:
            module.training = training


@contextmanager
def eval_mode(*modules: torch.nn.Module | None) -> Iterator[None]:
    """Put ``modules`` in eval mode for the body; restore each submodule's flag afterwards."""
    present = [m for m in modules if m is not None]
    modes = ModuleModes(present)
    try:
        for module in present:
            module.eval()
        yield
    finally:
        modes.restore()
