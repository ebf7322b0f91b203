"""One process of the multi-process test, launched by torchrun: a short run with validations every 2 steps.

Usage: python -m torch.distributed.run --nproc_per_node N tests/multiprocess_worker.py OUT TOKENIZER_DIR CLIP
With FAIL_ON_LAST_RANK_AT=<step>, sampling raises on the last process at that step; SCORING_MODE=async scores
in the background; FAMILY=flux trains tiny Flux modules instead of SD 1.x ones.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.helpers

from accelerate import Accelerator

from sdcallbacks import ValidationCallback
from sdcallbacks.config import validate_config
from sdcallbacks.metrics import build_metrics
from sdcallbacks.testing.modules import perturb_lora, tiny_flux_modules, tiny_lora_modules
from sdcallbacks.testing.tokenizer import build_clip_tokenizer, build_t5_tokenizer
from tests.helpers import MeanBrightness


def main(out: Path, tokenizer_dir: Path, clip: str) -> None:
    accelerator = Accelerator(cpu=True)
    rank = accelerator.process_index
    tokenizer = build_clip_tokenizer(tokenizer_dir / f"rank{rank}")
    if os.environ.get("FAMILY") == "flux":
        modules = tiny_flux_modules(tokenizer, build_t5_tokenizer(tokenizer_dir / f"t5_rank{rank}"))
    else:
        modules = tiny_lora_modules(tokenizer)
    data = {
        "output_dir": str(out),
        "prompts": [
            {"name": "a", "prompt": "red square", "seeds": [1, 2]},
            {"name": "b", "prompt": "blue square", "seeds": [3, 4]},
            {"name": "c", "prompt": "green square", "seeds": [5]},  # 5 images: uneven over 2 ranks
        ],
        "defaults": {"width": 32, "height": 32, "steps": 2, "guidance_scale": 2.0},
        "sampling": {"batch_size": 2},
        "schedule": {"every_n_steps": 2},
        "metrics": {"diversity_clip": {"clip": {"model": clip, "pretrained": None}}},
        "monitor": "val/brightness/mean",
        "checkpoint": {"save_top_k": 1},
        "early_stopping": {"patience": 1, "restore_best_at_end": True},
        "scoring": {"mode": os.environ.get("SCORING_MODE", "sync")},
    }
    config = validate_config(data)
    metrics = [MeanBrightness(), *build_metrics(config.metrics.enabled())]
    cb = ValidationCallback(config, accelerator=accelerator, metrics=metrics)
    controls = [list(vars(cb.on_train_start(**modules.__dict__)).values())]
    fail_at = int(os.environ.get("FAIL_ON_LAST_RANK_AT", "-1"))
    if rank == accelerator.num_processes - 1:
        sample = cb.validation.sampler.sample

        def failing_sample(jobs, variant="model"):
            if cb.schedule.last_step == fail_at:
                raise OSError(f"disk on fire at step {fail_at}")
            return sample(jobs, variant=variant)

        cb.validation.sampler.sample = failing_sample
    step = 0
    for step in range(1, 11):
        perturb_lora(modules, step)
        control = cb.on_step_end(step)
        controls.append([step, *vars(control).values()])
        if control.should_stop:
            break
    cb.on_train_end(step)
    lora = {n: p.sum().item() for n, p in modules.denoiser.named_parameters() if "lora" in n}
    result = {
        "controls": controls,
        "best_step": cb.best_step,
        "lora_sum": sum(lora.values()),
        "failed_validations": cb.failed_validations,
    }
    (out / f"rank{rank}.json").write_text(json.dumps(result))
    accelerator.end_training()


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3])
