"""The protocol every metric follows.

A metric turns a batch of images (each drawn for an :class:`ImageJob`) into scores:

* an :class:`ImageMetric` returns, per output key, one value per image, or ``None`` where the metric does
  not apply to that image (no face found, no in-vocabulary tag); those are counted as skipped and never
  averaged in. The aggregation (:mod:`sdcallbacks.aggregation`) turns them into mean, std, n, a bootstrap
  interval, per-prompt means, ``good_rate`` and the paired delta against the baseline;
* a :class:`SetMetric` compares the whole set of images with a reference distribution (KID, CMMD, FID)
  and returns one value per output key.

The main key is the metric's ``name``; extra keys are ``<name>/<part>`` (e.g. ``tag_accuracy/precision``).
Models load lazily on first use, so a metric can be built from a config long before it runs, and used on
its own, outside training. Backbones that several metrics use (CLIP) come from a shared
:class:`~sdcallbacks.metrics.backbones.BackbonePool` and run once per image per validation through
the batch's :class:`~sdcallbacks.metrics.backbones.FeatureCache`.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from PIL import Image

from sdcallbacks.config.metrics import MetricConfig
from sdcallbacks.metrics.backbones import BackbonePool, FeatureCache
from sdcallbacks.prompts.library import ImageJob
from sdcallbacks.sampling.rng import isolated_load, seeded_generator

Scores = dict[str, list[Any]]  # per image: a float or None; a JSON value under detail_keys


@dataclass(frozen=True)
class KeySpec:
    """How one output key is read: its direction, an optional ``good_rate`` threshold (share of images at or
    beyond it, in the key's direction) and an optional floor applied to the mean (torchmetrics clamps the
    CLIP score's mean at 0)."""

    higher_is_better: bool
    good_threshold: float | None = None
    mean_floor: float | None = None


@dataclass
class ImageBatch:
    """Images to score, the jobs they were drawn for, and the features computed for them so far."""

    images: Sequence[Image.Image]
    jobs: Sequence[ImageJob]
    features: FeatureCache

    @classmethod
    def of(cls, images: Sequence[Image.Image], jobs: Sequence[ImageJob]) -> ImageBatch:
        if len(images) != len(jobs):
            raise ValueError(f"{len(images)} images for {len(jobs)} prompts")
        return cls(list(images), list(jobs), FeatureCache(list(images)))

    @property
    def prompts(self) -> list[str]:
        return [job.prompt.prompt for job in self.jobs]

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, rows: list[int]) -> ImageBatch:
        """The images at ``rows`` with their jobs; features come from this batch's cache."""
        return ImageBatch(
            [self.images[i] for i in rows], [self.jobs[i] for i in rows], self.features.subset(rows)
        )

    def prompt_groups(self) -> list[list[int]]:
        """Positions of the images of each prompt (the seeds of one prompt), in first-seen order."""
        groups: dict[int, list[int]] = {}
        for position, job in enumerate(self.jobs):
            groups.setdefault(job.prompt.index, []).append(position)
        return list(groups.values())


class Metric(ABC):
    name: ClassVar[str]
    higher_is_better: ClassVar[bool]
    config_class: ClassVar[type[MetricConfig]]
    # Output keys other than ``name`` and whether higher is better for each.
    extra_keys: ClassVar[dict[str, bool]] = {}
    # True when one image's score depends on other images of the same validation (diversity, KID): such
    # metrics run once on the gathered images of all processes instead of on each process's share.
    needs_all_images: ClassVar[bool] = False
    # True when the score compares the image with its prompt: images without a prompt (a scored folder
    # with no caption) are skipped (None) instead of being compared with "".
    uses_prompt: ClassVar[bool] = False
    # Keys of per-image details (JSON values, not numbers) that ``compute`` returns beside the scores: kept
    # in each image record for analyses (``sdcallbacks report``), never aggregated or logged as scalars.
    detail_keys: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self, config: MetricConfig | None = None, device: str = "cpu", pool: BackbonePool | None = None
    ):
        self.config = config if config is not None else self.config_class()
        self.device = device
        self.pool = pool if pool is not None else BackbonePool()
        self._loaded = False

    def output_keys(self) -> dict[str, bool]:
        """Every output key with its direction (True: higher is better)."""
        return {
            self.name: self.higher_is_better,
            **{f"{self.name}/{k}": v for k, v in self.extra_keys.items()},
        }

    def key_specs(self) -> dict[str, KeySpec]:
        specs = {key: KeySpec(higher) for key, higher in self.output_keys().items()}
        specs[self.name] = KeySpec(self.higher_is_better, good_threshold=self.config.good_threshold)
        return specs

    def ensure_loaded(self) -> None:
        if not self._loaded:
            isolated_load(self.load)
            self._loaded = True

    @abstractmethod
    def load(self) -> None:
        """Load models and embed reference data (called once, on first use)."""

    def _batch(
        self, images: Sequence[Image.Image] | ImageBatch, jobs: Sequence[ImageJob] | None
    ) -> ImageBatch:
        if isinstance(images, ImageBatch):
            return images
        if jobs is None:
            raise TypeError(f"{self.name}: pass the jobs the images were drawn for")
        return ImageBatch.of(images, jobs)


class ImageMetric(Metric):
    """A metric with one score per image."""

    @abstractmethod
    def compute(self, batch: ImageBatch) -> Scores:
        """Per-image scores for every key of :meth:`output_keys`."""

    def score(
        self, images: Sequence[Image.Image] | ImageBatch, jobs: Sequence[ImageJob] | None = None
    ) -> Scores:
        batch = self._batch(images, jobs)
        self.ensure_loaded()
        rows = list(range(len(batch)))
        if self.uses_prompt:
            rows = [i for i, prompt in enumerate(batch.prompts) if prompt.strip()]
        scored = self._checked(batch.subset(rows) if len(rows) < len(batch) else batch)
        if len(rows) == len(batch):
            return scored
        scores: Scores = {key: [None] * len(batch) for key in scored}
        for key, values in scored.items():
            for row, value in zip(rows, values):
                scores[key][row] = value
        return scores

    def _checked(self, batch: ImageBatch) -> Scores:
        scores = self.compute(batch) if len(batch) else {key: [] for key in self.output_keys()}
        for key, values in scores.items():
            if len(values) != len(batch):
                raise RuntimeError(
                    f"{self.name}: key {key!r} has {len(values)} values for {len(batch)} images"
                )
        return scores


class SetMetric(Metric):
    """A metric with one value for the whole set of images (a distribution distance).

    Subclasses take the set's features (:meth:`set_features`, once) and compute their values from them
    (:meth:`on_features`). With ``ci_resamples`` in the config, ``<name>/ci_low`` and ``<name>/ci_high``
    are the 2.5 and 97.5 percentiles of the headline value over that many resamples of the validation
    images (drawn with replacement from a private generator seeded 0; the references stay fixed), so
    a set metric gets an interval as per-image means do.
    """

    needs_all_images = True

    def key_specs(self) -> dict[str, KeySpec]:
        return {key: KeySpec(higher) for key, higher in self.output_keys().items()}

    @property
    def ci_resamples(self) -> int:
        return int(getattr(self.config, "ci_resamples", 0))

    def output_keys(self) -> dict[str, bool]:
        keys = super().output_keys()
        if self.ci_resamples:
            keys.update(
                {f"{self.name}/ci_low": self.higher_is_better, f"{self.name}/ci_high": self.higher_is_better}
            )
        return keys

    @abstractmethod
    def set_features(self, batch: ImageBatch) -> torch.Tensor | None:
        """One row per image (None: too few images, said once here)."""

    @abstractmethod
    def on_features(self, features: torch.Tensor) -> dict[str, float | None]:
        """Every key of :meth:`output_keys` but the interval, from the set's feature rows."""

    def compute(self, batch: ImageBatch) -> dict[str, float | None]:
        features = self.set_features(batch)
        if features is None:
            return {key: None for key in self.output_keys()}
        values = self.on_features(features)
        if self.ci_resamples and values.get(self.name) is not None:
            values.update(self.bootstrap(features))
        return values

    def bootstrap(self, features: torch.Tensor) -> dict[str, float | None]:
        generator = seeded_generator(0)
        values = []
        for _ in range(self.ci_resamples):
            rows = torch.randint(len(features), (len(features),), generator=generator)
            value = self.on_features(features[rows]).get(self.name)
            if value is not None and math.isfinite(value):
                values.append(value)
        if len(values) < 2:
            return {f"{self.name}/ci_low": None, f"{self.name}/ci_high": None}
        low, high = np.quantile(values, [0.025, 0.975])
        return {f"{self.name}/ci_low": float(low), f"{self.name}/ci_high": float(high)}

    def score(
        self, images: Sequence[Image.Image] | ImageBatch, jobs: Sequence[ImageJob] | None = None
    ) -> dict[str, float]:
        batch = self._batch(images, jobs)
        self.ensure_loaded()
        return self.compute(batch)
