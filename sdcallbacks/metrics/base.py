"""The protocol every metric follows.

A metric scores images one by one. :meth:`Metric.score` returns, per output key, one value per image,
or ``None`` where the metric does not apply to that image (no face found, no in-vocabulary tag); those
are counted as skipped and never averaged in. The main key is the metric's ``name``; extra keys are
``<name>/<part>`` (e.g. ``tag_accuracy/precision``). Models load lazily on first use, so a metric can
be built from a config long before it runs, and used on its own, outside training.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import ClassVar

from PIL import Image
from pydantic import BaseModel

from sdcallbacks.prompts.library import ImageJob

Scores = dict[str, list[float | None]]


class Metric(ABC):
    name: ClassVar[str]
    higher_is_better: ClassVar[bool]
    config_class: ClassVar[type[BaseModel]]
    # Output keys other than ``name`` and whether higher is better for each.
    extra_keys: ClassVar[dict[str, bool]] = {}

    def __init__(self, config: BaseModel | None = None, device: str = "cpu"):
        self.config = config if config is not None else self.config_class()
        self.device = device
        self._loaded = False

    def output_keys(self) -> dict[str, bool]:
        """Every output key with its direction (True: higher is better)."""
        return {
            self.name: self.higher_is_better,
            **{f"{self.name}/{k}": v for k, v in self.extra_keys.items()},
        }

    def ensure_loaded(self) -> None:
        if not self._loaded:
            self.load()
            self._loaded = True

    @abstractmethod
    def load(self) -> None:
        """Load models and reference data (called once, on first use)."""

    @abstractmethod
    def compute(self, images: Sequence[Image.Image], jobs: Sequence[ImageJob]) -> Scores:
        """Per-image scores for every key of :meth:`output_keys`; ``images[i]`` was drawn for ``jobs[i]``."""

    def score(self, images: Sequence[Image.Image], jobs: Sequence[ImageJob]) -> Scores:
        if len(images) != len(jobs):
            raise ValueError(f"{self.name}: {len(images)} images for {len(jobs)} prompts")
        self.ensure_loaded()
        scores = self.compute(images, jobs)
        for key, values in scores.items():
            if len(values) != len(images):
                raise RuntimeError(
                    f"{self.name}: key {key!r} has {len(values)} values for {len(images)} images"
                )
        return scores
