"""WD14 tagger (SmilingWolf ``model.onnx`` + ``selected_tags.csv``) with the reference preprocessing.

Preprocessing follows SmilingWolf's ``wd-tagger`` Space: alpha composited onto white, padded to a white
square with the image centred at ((side-w)//2, (side-h)//2), PIL bicubic resize to the model's input
size, float32 0..255 without mean/std, RGB→BGR, NHWC. The model's output is already sigmoided.
Tags pass their threshold strictly (``p > threshold``), as in the Space; kohya and toriato use ``>=``.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from sdcallbacks.metrics.backbones.base import SessionBackbone
from sdcallbacks.metrics.backbones.onnx import fixed_batch, onnx_session
from sdcallbacks.metrics.images import on_white
from sdcallbacks.weights import resolve_file

RATING, GENERAL, CHARACTER = 9, 0, 4


@dataclass(frozen=True)
class TagVocabulary:
    names: tuple[str, ...]
    categories: tuple[int, ...]

    @classmethod
    def from_csv(cls, path: Path) -> TagVocabulary:
        names, categories = [], []
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            missing = {"name", "category"} - set(reader.fieldnames or ())
            if missing:
                raise ValueError(
                    f"{path}: missing column(s) {sorted(missing)}; expected tag_id,name,category,count"
                )
            for line, row in enumerate(reader, start=2):
                try:
                    categories.append(int(row["category"]))
                except (TypeError, ValueError):
                    raise ValueError(
                        f"{path}:{line}: category must be an integer, got {row['category']!r}"
                    ) from None
                names.append(row["name"])
        return cls(tuple(names), tuple(categories))

    @cached_property
    def index(self) -> dict[str, int]:
        """Tag name → output column, for general and character tags (ratings excluded)."""
        return {
            n: i for i, (n, c) in enumerate(zip(self.names, self.categories)) if c in (GENERAL, CHARACTER)
        }


def tags_above(
    probabilities: np.ndarray, vocabulary: TagVocabulary, threshold: float, character_threshold: float
) -> list[set[str]]:
    """Per image (row), the general and character tags above their threshold (strict ``>``; ratings
    never)."""
    categories = np.asarray(vocabulary.categories)
    thresholds = np.where(categories == CHARACTER, character_threshold, threshold)
    eligible = np.isin(categories, (GENERAL, CHARACTER))
    names = np.asarray(vocabulary.names, dtype=object)
    return [set(names[(row > thresholds) & eligible]) for row in probabilities]


def preprocess_wd14(image: Image.Image, size: int) -> np.ndarray:
    """One image as (size, size, 3) float32 BGR in 0..255."""
    image = on_white(image)
    w, h = image.size
    side = max(w, h)
    square = Image.new("RGB", (side, side), (255, 255, 255))
    square.paste(image, ((side - w) // 2, (side - h) // 2))
    if side != size:
        square = square.resize((size, size), Image.BICUBIC)
    return np.asarray(square, dtype=np.float32)[:, :, ::-1]


class WD14Tagger(SessionBackbone):
    """An ONNX WD14 tagger; ``source`` is a hub repo id or a local folder/``model.onnx`` path. Features are
    the (N, n_tags) probabilities, one column per ``selected_tags.csv`` row."""

    def __init__(self, source: str, device: str = "cpu", batch_size: int = 16):
        super().__init__(device, batch_size)
        self.source = source

    @property
    def key(self) -> str:
        return f"wd14:{self.source}"

    def load(self) -> None:
        self.model_path = resolve_file(self.source, "model.onnx")
        self.vocabulary = TagVocabulary.from_csv(resolve_file(self.source, "selected_tags.csv"))
        self.session = onnx_session(self.model_path, self.device)
        model_input = self.session.get_inputs()[0]
        self.input_name = model_input.name
        height = model_input.shape[1]
        self.size = height if isinstance(height, int) else 448
        # Some exports have a fixed batch dimension; feed those that many images at a time.
        self.batch_size = fixed_batch(self.session) or self.batch_size
        n_out = self.session.get_outputs()[0].shape[-1]
        if isinstance(n_out, int) and n_out != len(self.vocabulary.names):
            raise ValueError(
                f"{self.model_path}: the model has {n_out} outputs but selected_tags.csv lists "
                f"{len(self.vocabulary.names)} tags; the CSV must belong to this model"
            )

    def forward(self, images: Sequence[Image.Image]) -> torch.Tensor:
        batch = np.stack([preprocess_wd14(im, self.size) for im in images])
        return torch.from_numpy(self.session.run(None, {self.input_name: batch})[0]).double()
