"""What validation leaves behind in memory: ``scoring.backbones: offload`` against ``resident``.

Runs four validations with the mid-size backbone suite and reads the figures the callback logs. On
CUDA (modules and backbones on the GPU): ``val/mem_delta_mb``, the memory still allocated after a
validation above what was allocated before it (target with offload: within 50 MB once backbones are
loaded), and ``val/peak_mem_mb``. On the CPU, where offloading has nothing to move: the process RSS
after each validation, whose growth after the first (which loads the backbones) would be a leak.
Run: ``python bench/bench_memory.py``.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, mid_size_suite

from sdcallbacks import ValidationCallback
from sdcallbacks.config import validate_config
from sdcallbacks.metrics import build_metrics
from sdcallbacks.outputs import read_metrics
from sdcallbacks.testing.modules import tiny_lora_modules
from sdcallbacks.testing.tokenizer import build_clip_tokenizer


def run(placement: str, root: Path, suite, device: str) -> list[dict[str, float]]:
    modules = tiny_lora_modules(build_clip_tokenizer(root / "tokenizer"), lora_dropout=0.0)
    for module in modules.torch_modules():
        module.to(device)
    data = {
        "output_dir": str(root / placement),
        "prompts": [{"prompt": f"{c} square"} for c in ("red", "green", "blue", "yellow")],
        "defaults": {"num_images": 4, "width": 64, "height": 64, "steps": 4},
        "sampling": {"baseline": False},
        "schedule": {"every_n_steps": 1},
        "scoring": {"backbones": placement},
    }
    config = validate_config(data)
    config.metrics = suite
    accelerator = None
    if device == "cuda":
        from sdcallbacks.testing.accelerator import AcceleratorStub

        accelerator = AcceleratorStub(device=torch.device("cuda"))
    metrics = build_metrics(suite.enabled(), device=device)
    cb = ValidationCallback(config, accelerator=accelerator, metrics=metrics, register=False)
    cb.on_train_start(**vars(modules))
    for step in range(1, 5):
        cb.validate(step)
    rows = read_metrics(root / placement / "metrics.jsonl")
    return [r["values"] for r in rows if r["type"] == "aggregate"]


def main() -> None:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with tempfile.TemporaryDirectory() as tmp:
        suite = mid_size_suite(Path(tmp) / "backbones")
        results = {p: run(p, Path(tmp), suite, device) for p in ("offload", "resident")}
    print(f"machine: {machine()}; device {device}; 4 validations of 16 images")
    for placement, rows in results.items():
        if device == "cuda":
            deltas = ", ".join(f"{r['val/mem_delta_mb']:.1f}" for r in rows)
            peaks = ", ".join(f"{r['val/peak_mem_mb']:.0f}" for r in rows)
            print(
                f"{placement:8s}: left allocated after each validation [{deltas}] MB; peak extra [{peaks}] MB"
            )
        else:
            rss = ", ".join(f"{r['val/rss_mb']:.0f}" for r in rows)
            print(f"{placement:8s}: process RSS after each validation [{rss}] MB")
    if device == "cuda":
        worst = max(abs(r["val/mem_delta_mb"]) for r in results["offload"][1:])
        status = "OK" if worst <= 50 else "MISSED"
        print(f"target: offload leaves <= 50 MB on the GPU after a validation: {worst:.1f} MB -> {status}")
    else:
        growth = results["offload"][-1]["val/rss_mb"] - results["offload"][1]["val/rss_mb"]
        print(f"RSS growth from validation 2 to 4 (offload): {growth:+.0f} MB (CPU: nothing to offload)")
        print("target: offload leaves <= 50 MB on the GPU: not measurable without CUDA -> SKIPPED")


if __name__ == "__main__":
    main()
