"""Isolation of the training loop's random streams from validation.

``torch.random.fork_rng`` covers torch's CPU and accelerator generators but not python's ``random`` or
numpy, and with ``devices=None`` it touches every GPU. :func:`isolated_rng` saves all four streams
(CUDA only for the devices given, default the current one) and restores them in ``finally``, so the
training loop's draws after a validation are bit-identical to a run without validation.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch


@dataclass
class RNGState:
    python: Any
    numpy: dict[str, Any]
    torch_cpu: torch.Tensor
    cuda: dict[int, torch.Tensor]

    @classmethod
    def capture(cls, cuda_devices: Sequence[int] | None = None) -> RNGState:
        cuda: dict[int, torch.Tensor] = {}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            devices = [torch.cuda.current_device()] if cuda_devices is None else list(cuda_devices)
            cuda = {d: torch.cuda.get_rng_state(d) for d in devices}
        return cls(random.getstate(), np.random.get_state(legacy=False), torch.get_rng_state(), cuda)

    def restore(self) -> None:
        random.setstate(self.python)
        np.random.set_state(self.numpy)
        torch.set_rng_state(self.torch_cpu)
        for device, state in self.cuda.items():
            torch.cuda.set_rng_state(state, device)


@contextmanager
def isolated_rng(cuda_devices: Sequence[int] | None = None) -> Iterator[RNGState]:
    """Run the body with every global random stream restored afterwards, even on error."""
    state = RNGState.capture(cuda_devices)
    try:
        yield state
    finally:
        state.restore()


def isolated_load(load: Callable[[], None]) -> None:
    """Run a backbone's first load with every global random stream restored afterwards: building a
    network draws its random initialisation from the global generators before the weights overwrite it,
    and mid-training those are the training loop's streams. Call it from the training thread: restoring
    the streams from another thread would rewind draws the training loop made meanwhile."""
    with isolated_rng():
        load()


def seeded_generator(seed: int) -> torch.Generator:
    """A private CPU generator: reproducible draws (KID's subsets, IS's shuffle, bootstrap resamples) that
    never touch the global streams, so they are safe in the background scoring thread."""
    return torch.Generator().manual_seed(seed)
