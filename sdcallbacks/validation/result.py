"""What one validation produces: per variant, the images, their records and the aggregates.

:class:`DrawnVariant` is a variant's images as drawn (on one process, or gathered from all of them), with
per-image scores where they were already computed; :class:`ValidationResult` is the finished validation
that reporting (files, trackers) and decisions (best checkpoint, early stopping) take.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from PIL import Image

from sdcallbacks.aggregation.keys import variant_prefix
from sdcallbacks.aggregation.records import ImageRecord
from sdcallbacks.prompts.library import ImageJob


@dataclass
class DrawnVariant:
    """One variant's images of one validation and their records (``scored``: per-image metrics ran)."""

    variant: str
    records: list[ImageRecord]
    images: list[Image.Image]
    jobs: list[ImageJob]
    scored: bool = False
    sets: dict[str, float | None] = field(default_factory=dict)  # set-level values (val_loss) so far
    costs: dict[str, float] = field(default_factory=dict)  # time/..., memory figures

    @classmethod
    def merged(cls, parts: list[DrawnVariant]) -> DrawnVariant:
        """Every process's share as one, in prompt-major order (the order of the job list). Costs and set
        values are the first part's: the main process measures them."""
        rows = sorted(
            (row for part in parts for row in zip(part.records, part.images, part.jobs)),
            key=lambda row: row[2].key,
        )
        first = parts[0]
        return cls(
            first.variant,
            [r for r, _, _ in rows],
            [im for _, im, _ in rows],
            [job for _, _, job in rows],
            scored=all(part.scored for part in parts),
            sets=dict(first.sets),
            costs=dict(first.costs),
        )


@dataclass
class VariantResult:
    """One variant of a finished validation. ``label`` names its files and rows: ``base`` for the
    baseline validation, otherwise the variant. ``values`` are the logged scalars, prefixed
    (``val/...`` or ``val/ema/...``)."""

    variant: str
    label: str
    records: list[ImageRecord]
    images: list[Image.Image]
    jobs: list[ImageJob]
    sets: dict[str, float | None]
    values: dict[str, float]

    @property
    def prefix(self) -> str:
        return variant_prefix(self.variant)

    def add_costs(self, costs: dict[str, float]) -> None:
        """What drawing and scoring this variant cost (``time/...``, memory), into ``values``."""
        self.values.update({f"{self.prefix}/{key}": value for key, value in costs.items()})


@dataclass
class ValidationResult:
    """One validation at ``step``: its variants in order; the first is the one ``monitor`` reads."""

    step: int
    baseline: bool
    variants: list[VariantResult]
    weights: str | None = None  # the saved checkpoint drawn (evaluate, watch): its name in the PNGs

    @property
    def monitored(self) -> VariantResult | None:
        """The variant selection decides on (None for the baseline validation, which decides nothing)."""
        return None if self.baseline or not self.variants else self.variants[0]

    @property
    def values(self) -> dict[str, float]:
        """Every variant's scalars together (their prefixes differ, except the baseline's own)."""
        return {key: value for part in self.variants for key, value in part.values.items()}
