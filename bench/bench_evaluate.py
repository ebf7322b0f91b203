"""``sdcallbacks evaluate``: N = 8 LoRA checkpoints made ready for scoring with the base pipeline loaded once
and each LoRA swapped in and out (``CheckpointSwap``), against reloading the pipeline per checkpoint and
loading its LoRA (target: at least 3x faster at N = 8). The tiny world's pipeline (``sdcallbacks
build-world``) and LoRAs like the demo's (rank 8 on the UNet's attention). Both sides run alternately, 3
pairs; the figure is the median of the per-pair ratios. For scale, one validation of the demo's prompts (8
images, 20 steps, tag accuracy) is timed too: with it, the share of an evaluation spent loading weights.
Run: ``python bench/bench_evaluate.py``.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import interleaved, machine

from sdcallbacks.checkpoints import CheckpointSwap, find_checkpoints, load_base_pipeline
from sdcallbacks.config import MetricsConfig, TagAccuracyConfig
from sdcallbacks.demo import demo_config
from sdcallbacks.execution.assemble import build_validation
from sdcallbacks.sampling.modules import TrainingModules
from sdcallbacks.sampling.sampler import ValidationSampler
from sdcallbacks.testing.modules import perturb_lora
from sdcallbacks.testing.world import build_tiny_world

N = 8


def write_checkpoints(base: str, folder: Path) -> list:
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    pipeline = load_base_pipeline(base)
    modules = TrainingModules.from_components(pipeline.components)
    modules.unet.add_adapter(
        LoraConfig(
            r=8,
            lora_alpha=8,
            init_lora_weights="gaussian",
            target_modules=["to_q", "to_k", "to_v", "to_out.0"],
        )
    )
    for step in range(1, N + 1):
        perturb_lora(modules, step)
        type(pipeline).save_lora_weights(
            folder / f"checkpoint-{step * 100}", unet_lora_layers=get_peft_model_state_dict(modules.unet)
        )
    return find_checkpoints([folder]).checkpoints


def main() -> None:
    world = build_tiny_world()
    base = str(world.pipeline_dir)
    with tempfile.TemporaryDirectory() as tmp:
        checkpoints = write_checkpoints(base, Path(tmp))

        def swapped() -> None:
            pipeline = load_base_pipeline(base)
            swap = CheckpointSwap(pipeline, TrainingModules.from_components(pipeline.components), base)
            for checkpoint in checkpoints:
                with swap.applied(checkpoint):
                    pass

        def reloaded() -> None:
            for checkpoint in checkpoints:
                pipeline = load_base_pipeline(base)
                pipeline.load_lora_weights(str(checkpoint.path))

        swap_s, reload_s, ratio = interleaved(swapped, reloaded, repeats=3)

        config = demo_config(world, Path(tmp) / "out", 100)
        config = config.model_copy(
            update={"metrics": MetricsConfig(tag_accuracy=TagAccuracyConfig(model=str(world.tagger_dir)))}
        )
        pipeline = load_base_pipeline(base)
        modules = TrainingModules.from_components(pipeline.components)
        validation = build_validation(config)
        validation.sampler = ValidationSampler(modules, batch_size=8)
        swap = CheckpointSwap(pipeline, modules, base)
        with swap.applied(checkpoints[0]):
            validation(0)  # loads the tagger
            started = time.perf_counter()
            validation(100)
            validation_s = time.perf_counter() - started

    print(machine())
    print(f"{N} LoRA checkpoints of the tiny world's pipeline, weights ready for scoring:")
    print(f"  base loaded once, LoRAs swapped:   {swap_s:.3f} s ({swap_s / N * 1000:.0f} ms per checkpoint)")
    print(
        f"  pipeline reloaded per checkpoint:  {reload_s:.3f} s ({reload_s / N * 1000:.0f} ms per checkpoint)"
    )
    print(f"  one validation (8 images, 20 steps, tag accuracy): {validation_s:.3f} s")
    swapped_share = swap_s / (swap_s + N * validation_s)
    reloaded_share = reload_s / (reload_s + N * validation_s)
    print(f"  loading's share of an evaluation: {swapped_share:.1%} swapped, {reloaded_share:.1%} reloaded")
    status = "met" if ratio >= 3 else "MISSED"
    print(
        f"target: swapping LoRAs >= 3x faster than reloading the pipeline per checkpoint (N={N}): "
        f"{ratio:.1f}x -> {status}"
    )


if __name__ == "__main__":
    main()
