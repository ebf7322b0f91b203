"""The validation core as a plain call: ``sdcallbacks.validate`` gives what the callback logs at the same
step, leaves training as it was, and needs no callback, tracker or output folder."""

from __future__ import annotations

import random

import numpy as np
import torch
from PIL import Image

from sdcallbacks import ValidationCallback, build_metrics, load_prompts, validate
from sdcallbacks.aggregation.keys import is_cost_key
from sdcallbacks.config import validate_config
from sdcallbacks.testing.modules import perturb_lora
from tests.helpers import logged_aggregates, start


def run_config(tmp_path, tagger_dir):
    return validate_config(
        {
            "output_dir": str(tmp_path / "out"),
            "prompts": [
                {"name": "red", "prompt": "red square, white background", "seeds": [1, 2]},
                {"name": "blue", "prompt": "blue square"},
            ],
            "defaults": {"num_images": 2, "width": 32, "height": 32, "steps": 2, "guidance_scale": 2.0},
            "sampling": {"baseline": False},
            "metrics": {"tag_accuracy": {"model": str(tagger_dir)}},
            "monitor": "val/tag_accuracy/mean",
        }
    )


def draws() -> tuple[float, float, float]:
    return random.random(), float(np.random.rand()), torch.rand(1).item()


def test_validate_is_the_callbacks_validation_and_leaves_training_as_it_was(
    tmp_path, tagger_dir, tiny_modules
):
    config = run_config(tmp_path, tagger_dir)
    perturb_lora(tiny_modules, step=1)
    tiny_modules.unet.train()
    random.seed(3), np.random.seed(3), torch.manual_seed(3)
    expected = draws()
    random.seed(3), np.random.seed(3), torch.manual_seed(3)
    result = validate(tiny_modules, load_prompts(config), build_metrics(config.metrics.enabled()), step=7)
    assert draws() == expected and tiny_modules.unet.training
    assert not (tmp_path / "out").exists()  # a plain call writes nothing

    (part,) = result.variants
    assert result.step == 7 and part.variant == "model" and len(part.records) == len(part.images) == 4
    assert all(record.scores.keys() >= {"tag_accuracy"} for record in part.records)

    cb = ValidationCallback(config)
    start(cb, tiny_modules)
    cb.validate(7)
    ((step, variant, logged),) = logged_aggregates(tmp_path / "out")
    assert (step, variant) == (7, "model")
    assert {k: v for k, v in result.values.items() if not is_cost_key(k)} == logged
    for record, image in zip(part.records, part.images):
        saved = tmp_path / "out" / "samples" / "step_0000007" / f"{record.prompt_name}_s{record.seed}.png"
        np.testing.assert_array_equal(np.asarray(Image.open(saved)), np.asarray(image))
