"""Cost of ``on_step_end`` when no validation is due (target: under 50 µs median).

Prints the median per call next to its floor, a bare Python method call, measured in the same run.
Run: ``python bench/bench_step_end.py`` (or every benchmark: ``python bench/run.py``).
"""

from __future__ import annotations

import platform
import statistics
import tempfile
import time

import torch

from sdcallbacks import ValidationCallback
from sdcallbacks.testing.accelerator import AcceleratorStub


class Floor:
    def on_step_end(self, global_step: int):
        return None


def median_ns(fn, calls: int = 200_000, repeats: int = 7) -> float:
    runs = []
    for _ in range(repeats):
        start = time.perf_counter_ns()
        for step in range(1, calls + 1):
            fn(step)
        runs.append((time.perf_counter_ns() - start) / calls)
    return statistics.median(runs)


def main() -> None:
    with tempfile.TemporaryDirectory() as out:
        callback = ValidationCallback.from_config(
            {
                "output_dir": out,
                "prompts": [{"prompt": "red square"}],
                "schedule": {"every_n_steps": 10_000_000, "every_n_minutes": 10_000},
                "sampling": {"baseline": False},
            },
            accelerator=AcceleratorStub(sync_gradients=True),
        )
        module = torch.nn.Linear(1, 1)
        callback.on_train_start(
            unet=module, vae=module, text_encoder=module, tokenizer=None, noise_scheduler=None
        )
        cost = median_ns(callback.on_step_end)
        floor = median_ns(Floor().on_step_end)
    print(f"machine: {platform.processor() or platform.machine()}, python {platform.python_version()}")
    print(
        f"on_step_end (not due): {cost / 1000:.3f} µs median per call; floor (bare method call) "
        f"{floor / 1000:.3f} µs; ratio {cost / floor:.1f}x"
    )
    print(f"target: no-op on_step_end < 50 µs: {cost / 1000:.3f} µs -> {'OK' if cost < 50_000 else 'MISSED'}")


if __name__ == "__main__":
    main()
