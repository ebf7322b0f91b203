"""How long validation holds the training loop: ``scoring.mode: sync`` against ``async``.

A stand-in training loop (forward, backward and AdamW step of the tiny-world UNet's LoRA) validates every
``EVERY`` steps; the mid-size backbone suite (see ``common.py``) scores 16 images of 4 prompts. For each
validation after the baseline: the time ``on_step_end`` held the loop (``time/blocked_s``), the sampling
and scoring times the callback logged, and, for async, the part spent waiting for the previous job.
Target (async): blocked <= sampling + 5% of scoring. Also the wall time of the whole loop in both modes.
Run: ``python bench/bench_async.py``.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
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

EVERY, STEPS = 80, 240  # room between validations for a scoring job on 2 contended cores


def train_step(modules, optimizer, generator) -> None:
    unet = modules.unet
    latents = torch.randn(8, unet.config.in_channels, 16, 16, generator=generator)
    hidden = torch.randn(8, 8, unet.config.cross_attention_dim, generator=generator)
    timesteps = torch.randint(0, 1000, (8,), generator=generator)
    loss = unet(latents, timesteps, hidden).sample.pow(2).mean()
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()


def run(mode: str, root: Path, suite) -> dict[str, float]:
    modules = tiny_lora_modules(build_clip_tokenizer(root / "tokenizer"), lora_dropout=0.0)
    data = {
        "output_dir": str(root / mode),
        "prompts": [{"prompt": f"{c} square, white background"} for c in ("red", "green", "blue", "yellow")],
        "defaults": {"num_images": 4, "width": 32, "height": 32, "steps": 4},
        "sampling": {"batch_size": 8},
        "schedule": {"every_n_steps": EVERY, "validate_at_end": False},
        "monitor": "val/clip_score/mean",
        "scoring": {"mode": mode},
    }
    config = validate_config(data)
    config.metrics = suite
    cb = ValidationCallback(config, metrics=build_metrics(suite.enabled(), device="cpu"))
    params = [p for n, p in modules.unet.named_parameters() if "lora" in n]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    generator = torch.Generator().manual_seed(0)
    cb.on_train_start(**vars(modules))  # the baseline: loads every backbone (not measured)
    cb.wait_for_scoring()
    blocked, started = [], time.perf_counter()
    for step in range(1, STEPS + 1):
        modules.unet.train()
        train_step(modules, optimizer, generator)
        before = time.perf_counter()
        if cb.on_step_end(step).should_validate:
            blocked.append(time.perf_counter() - before)
    loop = time.perf_counter() - started
    cb.on_train_end()
    rows = [r["values"] for r in read_metrics(root / mode / "metrics.jsonl") if r["type"] == "aggregate"][1:]
    med = lambda key: statistics.median(r.get(key, 0.0) for r in rows)  # noqa: E731
    return {
        "blocked": statistics.median(blocked),
        "sampling": med("val/time/sampling_s"),
        "scoring": med("val/time/scoring_s"),
        "waited": med("val/time/waited_s"),
        "loop": loop,
        "validations": len(rows),
    }


def main() -> None:
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        suite = mid_size_suite(Path(tmp) / "backbones")
        results = {mode: run(mode, Path(tmp), suite) for mode in ("sync", "async")}
    print(f"machine: {machine()}; {STEPS} steps, a validation every {EVERY} (medians over the last 3)")
    for mode, r in results.items():
        print(
            f"{mode:5s}: loop held {r['blocked']:6.2f} s per validation; sampling {r['sampling']:.2f} s, "
            f"scoring {r['scoring']:.2f} s, waited for the previous job {r['waited']:.2f} s; "
            f"whole loop {r['loop']:.1f} s"
        )
    a = results["async"]
    excess = (a["blocked"] - a["sampling"]) / a["scoring"]
    handover = (a["blocked"] - a["sampling"] - a["waited"]) / a["scoring"]
    print(
        f"async hold beyond sampling: {a['blocked'] - a['sampling']:.3f} s = {excess:.1%} of scoring "
        f"({handover:.1%} not counting waits for the previous job); "
        f"loop {results['sync']['loop'] / a['loop']:.2f}x faster than sync"
    )
    status = "OK" if excess < 0.05 else "MISSED"
    print(f"target: async stall <= sampling + 5% of scoring: {excess:.1%} -> {status}")


if __name__ == "__main__":
    main()
