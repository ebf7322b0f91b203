"""val_loss: fixed noise and timesteps, no side effects on training."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from sdcallbacks.config.metrics import ValLossConfig
from sdcallbacks.metrics.loss import ValidationLoss
from sdcallbacks.testing.shapes import draw_square


@pytest.fixture
def held_out(tmp_path):
    rng = np.random.default_rng(0)
    for i, colour in enumerate(["red", "green", "blue"]):
        draw_square(colour, "white", 40, rng).save(tmp_path / f"{i}.png")
        (tmp_path / f"{i}.txt").write_text(f"{colour} square, white background", encoding="utf-8")
    return tmp_path


def test_val_loss_is_deterministic_and_leaves_training_state_alone(tiny_modules, held_out):
    loss = ValidationLoss(ValLossConfig(data=held_out, resolution=32, batch_size=2, timesteps=[200, 800]))
    tiny_modules.unet.train()
    timesteps_before = tiny_modules.noise_scheduler.timesteps.clone()
    torch.manual_seed(7)
    random.seed(7)
    state = (torch.get_rng_state(), random.getstate())
    first = loss.evaluate(tiny_modules)
    assert torch.equal(state[0], torch.get_rng_state()) and state[1] == random.getstate()
    assert tiny_modules.unet.training and all(m.training for m in tiny_modules.unet.modules())
    assert torch.equal(timesteps_before, tiny_modules.noise_scheduler.timesteps)
    assert set(first) == {"val_loss", "val_loss/t200", "val_loss/t800"}
    assert first["val_loss"] == pytest.approx((first["val_loss/t200"] + first["val_loss/t800"]) / 2)
    assert loss.evaluate(tiny_modules) == first  # same images, same noise: same number

    with torch.no_grad():  # the curve moves with the weights
        for name, param in tiny_modules.unet.named_parameters():
            if "lora_B" in name:
                param.add_(0.5)
    assert loss.evaluate(tiny_modules)["val_loss"] != first["val_loss"]


def test_val_loss_rejects_timesteps_beyond_the_schedule(tiny_modules, held_out):
    loss = ValidationLoss(ValLossConfig(data=held_out, resolution=32, timesteps=[1000]))
    with pytest.raises(ValueError, match="num_train_timesteps"):
        loss.evaluate(tiny_modules)
