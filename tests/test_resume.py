"""Resume through accelerate's save_state/load_state: the bookkeeping continues as if never stopped."""

from __future__ import annotations

import copy

import pytest

from sdcallbacks import ValidationCallback
from sdcallbacks.testing.modules import perturb_lora
from tests.helpers import MeanBrightness, logged_aggregates, start


@pytest.fixture
def fresh_accelerator():
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState

    def make():
        AcceleratorState._reset_state(True)
        GradientState._reset_state()
        return Accelerator(cpu=True)

    yield make
    AcceleratorState._reset_state(True)
    GradientState._reset_state()


def config(out):
    return {
        "output_dir": str(out),
        "prompts": [{"name": "a", "prompt": "red square", "seeds": [1, 2]}, {"name": "b", "prompt": "blue"}],
        "defaults": {"num_images": 2, "width": 32, "height": 32, "steps": 2, "guidance_scale": 2.0},
        "schedule": {"every_n_steps": 2},
        "metrics": {},
        "monitor": "val/brightness/mean",
        "mode": "max",
        "checkpoint": {"save_top_k": 2},
        "early_stopping": {"patience": 2, "min_delta": 0.001},
    }


def train(cb, modules, steps):
    controls = {}
    for step in steps:
        perturb_lora(modules, step)
        control = cb.on_step_end(step)
        if control.should_validate:
            controls[step] = (control.should_stop, control.should_save)
    return controls


def comparable(cb):
    state = cb.state_dict()
    checkpoint = state["selection"]["checkpoint"]
    return {
        "best": (cb.best_step, cb.best_model_score),
        "kept": sorted(zip(checkpoint["steps"].values(), checkpoint["best_k_models"].values())),
        "early_stopping": state["selection"]["early_stopping"],
        "monitored": state["selection"]["monitored"],
        "schedule": state["schedule"],
        "baseline": len(state["baseline"]["records"]["base"]),
    }


def test_save_state_load_state_round_trip_continues_bookkeeping(tmp_path, tiny_modules, fresh_accelerator):
    steps = range(1, 13)
    straight_modules = copy.deepcopy(tiny_modules)
    straight = ValidationCallback.from_config(
        config(tmp_path / "straight"), accelerator=fresh_accelerator(), metrics=[MeanBrightness()]
    )
    start(straight, straight_modules, 0)
    expected = train(straight, straight_modules, steps)

    accelerator = fresh_accelerator()
    first = ValidationCallback.from_config(
        config(tmp_path / "resumed"), accelerator=accelerator, metrics=[MeanBrightness()]
    )
    start(first, tiny_modules, 0)
    controls = train(first, tiny_modules, range(1, 7))
    accelerator.save_state(str(tmp_path / "state"))

    accelerator = fresh_accelerator()
    second = ValidationCallback.from_config(
        config(tmp_path / "resumed"), accelerator=accelerator, metrics=[MeanBrightness()]
    )
    accelerator.load_state(str(tmp_path / "state"))  # fills the registered callback
    assert not start(second, tiny_modules, 6).should_validate  # no second baseline
    assert not second.on_step_end(6).should_validate  # nor the resume step
    controls.update(train(second, tiny_modules, range(7, 13)))

    assert controls == expected
    assert comparable(second) == comparable(straight)
    assert logged_aggregates(tmp_path / "resumed") == logged_aggregates(tmp_path / "straight")
    assert [s for s, *_ in logged_aggregates(tmp_path / "resumed")] == [0, 2, 4, 6, 8, 10, 12]
    assert any(stop for stop, _ in expected.values())  # the stop decision was exercised across the resume
