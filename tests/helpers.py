"""Helpers shared by the tests: a metric whose scores move with the weights, and starting a callback."""

from __future__ import annotations

import contextlib

import numpy as np

from sdcallbacks.aggregation.keys import is_cost_key
from sdcallbacks.config import MetricConfig
from sdcallbacks.metrics.base import ImageMetric
from sdcallbacks.outputs import read_metrics


class MeanBrightness(ImageMetric):
    name = "brightness"
    higher_is_better = True
    config_class = MetricConfig

    def load(self) -> None:
        pass

    def compute(self, batch):
        return {
            self.name: [
                float(np.asarray(im.convert("L"), dtype=np.float64).mean() / 255) for im in batch.images
            ]
        }


class Scripted(ImageMetric):
    """Scores every image of a validation with the next of ``values``: the test decides which step is best."""

    name = "scripted"
    higher_is_better = True
    config_class = MetricConfig

    def __init__(self, values):
        super().__init__()
        self.values = list(values)

    def load(self) -> None:
        pass

    def compute(self, batch):
        return {self.name: [self.values.pop(0)] * len(batch)}


class Worsening(MeanBrightness):
    """A score that gets worse at every validation: 1, 1/2, 1/3, ..."""

    name = "worsening"

    def __init__(self):
        super().__init__()
        self.calls = 0

    def compute(self, batch):
        self.calls += 1
        return {self.name: [1.0 / self.calls] * len(batch)}


def start(callback, modules, step: int = 0):
    """``on_train_start`` with every module of a :class:`TrainingModules`."""
    return callback.on_train_start(**vars(modules), global_step=step)


def logged_aggregates(out) -> list[tuple[int, str, dict]]:
    """(step, variant, values) of every aggregate in ``out/metrics.jsonl``, without the cost figures (time,
    memory), which differ from run to run."""
    return [
        (r["step"], r["variant"], {k: v for k, v in r["values"].items() if not is_cost_key(k)})
        for r in read_metrics(out / "metrics.jsonl")
        if r["type"] == "aggregate"
    ]


def pipeline_of(modules):
    """The family's diffusers pipeline built by hand from a :class:`TrainingModules` (the reference the
    tests compare with): every module in eval mode, as ``from_pretrained`` leaves them, and a fresh copy of
    the training scheduler."""
    import diffusers

    for module in modules.torch_modules():
        module.eval()
    names = [
        "vae",
        "text_encoder",
        "tokenizer",
        "text_encoder_2",
        "tokenizer_2",
        "text_encoder_3",
        "tokenizer_3",
    ]
    parts = {n: getattr(modules, n) for n in names if getattr(modules, n) is not None}
    parts["scheduler"] = type(modules.noise_scheduler).from_config(modules.noise_scheduler.config)
    if isinstance(modules.transformer, diffusers.SD3Transformer2DModel):
        parts.setdefault("text_encoder_3", None)
        parts.setdefault("tokenizer_3", None)
        pipe = diffusers.StableDiffusion3Pipeline(transformer=modules.transformer, **parts)
    elif modules.transformer is not None:
        pipe = diffusers.FluxPipeline(transformer=modules.transformer, **parts)
    elif modules.text_encoder_2 is not None:
        pipe = diffusers.StableDiffusionXLPipeline(unet=modules.unet, **parts)
    else:
        extra = {"safety_checker": None, "feature_extractor": None, "requires_safety_checker": False}
        pipe = diffusers.StableDiffusionPipeline(unet=modules.unet, **parts, **extra)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def run_config(tmp_path, **overrides):
    """A two-image run validating every 2 steps, monitoring :class:`MeanBrightness`; ``overrides`` replace
    top-level keys."""
    from sdcallbacks.config import validate_config

    data = {
        "output_dir": str(tmp_path / "out"),
        "prompts": [{"name": "red", "prompt": "red square", "seeds": [1, 2]}],
        "defaults": {"width": 32, "height": 32, "steps": 2, "guidance_scale": 2.0},
        "schedule": {"every_n_steps": 2},
        "metrics": {},
        "monitor": "val/brightness/mean",
    }
    data.update(overrides)
    return validate_config(data)


def headless_chromium():
    """A Selenium driver of Debian's headless Chromium, or a skip saying how to install it."""
    import shutil

    import pytest

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if chromium is None or driver_path is None:
        pytest.skip("no Chromium here: apt-get install -y chromium chromium-driver (.ci/run installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1200,1600"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(options=options, service=Service(driver_path))


@contextlib.contextmanager
def one_thread():
    """torch on one thread, as a torchrun process with ``OMP_NUM_THREADS=1`` is: an in-process run is the
    same arithmetic as one launched process, without the cost of starting one."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
