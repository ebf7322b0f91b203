"""One process of ``bench_processes.py`` (launched by torchrun, or alone): times validations that only
sample (no metrics) the same 16-image prompt set, split over the processes; rank 0 writes the median."""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from accelerate import Accelerator

from sdcallbacks import ValidationCallback
from sdcallbacks.config import validate_config
from sdcallbacks.testing.modules import tiny_lora_modules
from sdcallbacks.testing.tokenizer import build_clip_tokenizer


def main(result: Path) -> None:
    accelerator = Accelerator(cpu=True)
    with tempfile.TemporaryDirectory() as tmp:
        modules = tiny_lora_modules(build_clip_tokenizer(Path(tmp) / "tokenizer"), lora_dropout=0.0)
        config = validate_config(
            {
                "output_dir": str(Path(tmp) / "out"),
                "prompts": [{"prompt": f"{c} square"} for c in ("red", "green", "blue", "yellow")],
                "defaults": {"num_images": 4, "width": 64, "height": 64, "steps": 6},
                "sampling": {"batch_size": 2, "baseline": False},
                "schedule": {"every_n_steps": 1},
                "trackers": {"images": False},
            }
        )
        cb = ValidationCallback(config, accelerator=accelerator, metrics=[])
        cb.on_train_start(**vars(modules))
        times = []
        for step in range(1, 5):  # the first is a warm-up
            accelerator.wait_for_everyone()
            started = time.perf_counter()
            cb.validate(step)
            times.append(time.perf_counter() - started)
    if accelerator.is_main_process:
        result.write_text(json.dumps({"median_s": statistics.median(times[1:])}))
    accelerator.end_training()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
