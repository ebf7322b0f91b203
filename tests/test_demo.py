"""End to end: the demo's LoRA learns its concept and the callback sees it (builds the tiny world once)."""

from __future__ import annotations

import math

import pytest

from sdcallbacks.outputs import read_metrics


@pytest.mark.slow
def test_demo_metric_rises_and_outputs_exist(tmp_path, tiny_world, capfd):
    from sdcallbacks.demo import run_demo

    result = run_demo(output_dir=tmp_path / "demo", max_steps=600, validate_every=100, progress_bar=True)
    bar = capfd.readouterr().err
    # the progress bar: steps, loss and the last validation's monitored value at its step
    assert "training" in bar and "600/600" in bar and "loss=" in bar and "tag_accuracy=" in bar
    assert "@600" in bar  # the validation at the last step
    assert math.isfinite(result.baseline_score) and math.isfinite(result.best_score)
    assert result.gain >= 0.3, (result.baseline_score, result.best_score)
    assert result.best_step > 0

    records = read_metrics(result.metrics_path)
    steps = [r["step"] for r in records if r["type"] == "aggregate"]
    assert steps == [0, 100, 200, 300, 400, 500, 600]
    assert (result.samples_dir / "step_0000000_base" / "grid.png").is_file()

    # The kept LoRA loads into the base pipeline in diffusers format.
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(tiny_world.pipeline_dir)
    pipe.load_lora_weights(result.best_model_path)

    # W&B wrote an offline run.
    assert result.wandb_dir is not None and list(result.wandb_dir.glob("run-*.wandb"))
