"""``MemoryMeter``: the memory a validation takes, for ``val/peak_mem_mb`` and friends.

On CUDA: ``peak_mem_mb`` is the peak of ``torch.cuda.memory_allocated`` during the validation above what
was allocated when it started, and ``mem_delta_mb`` what is still allocated after it (near 0 with
``scoring.backbones: offload`` once the backbones are loaded). The peak comes from torch's peak
counter, which the meter resets when a validation starts: read your own peak figures before that if you
log them. On the CPU, where torch has no such counter: ``rss_mb``, the process's resident set after the
validation, and ``peak_rss_mb``, its high-water mark so far (the OS keeps no per-interval peak).
"""

from __future__ import annotations

import resource
import sys

import torch

MB = 1024 * 1024


def _rss_bytes() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def _peak_rss_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # Linux reports KiB


class MemoryMeter:
    def __init__(self, device: torch.device | str | None):
        device = torch.device(device) if device is not None else torch.device("cpu")
        self.cuda = device.type == "cuda" and torch.cuda.is_available()
        self.device = device
        self._before = 0

    def start(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)
            self._before = torch.cuda.memory_allocated(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)

    def read(self) -> dict[str, float]:
        """Figures since :meth:`start`, in MiB."""
        if self.cuda:
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
            now = torch.cuda.memory_allocated(self.device)
            return {"peak_mem_mb": (peak - self._before) / MB, "mem_delta_mb": (now - self._before) / MB}
        return {"rss_mb": _rss_bytes() / MB, "peak_rss_mb": _peak_rss_bytes() / MB}
