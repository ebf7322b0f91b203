"""WD14 tagger (SmilingWolf ``model.onnx`` + ``selected_tags.csv``) with the reference preprocessing.

Preprocessing follows SmilingWolf's ``wd-tagger`` Space: alpha composited onto white, padded to a white
square with the image centred at ((side-w)//2, (side-h)//2), PIL bicubic resize to the model's input
size, float32 0..255 without mean/std, RGB→BGR, NHWC. The model's output is already sigmoided.
Tags pass their threshold strictly (``p > threshold``), as in the Space; kohya and toriato use ``>=``.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
from PIL import Image

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


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB, with transparency composited onto white and 16-bit/float modes scaled to 8 bits."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        array = np.asarray(image, dtype=np.float64)
        scale = 255.0 / 65535.0 if image.mode.startswith("I;16") or array.max() > 255 else 1.0
        image = Image.fromarray(np.clip(array * scale, 0, 255).astype(np.uint8), "L")
    if image.mode in ("RGBA", "LA", "P", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        canvas.alpha_composite(rgba)
        return canvas.convert("RGB")
    return image.convert("RGB")


def preprocess_wd14(image: Image.Image, size: int) -> np.ndarray:
    """One image as (size, size, 3) float32 BGR in 0..255."""
    image = to_rgb(image)
    w, h = image.size
    side = max(w, h)
    square = Image.new("RGB", (side, side), (255, 255, 255))
    square.paste(image, ((side - w) // 2, (side - h) // 2))
    if side != size:
        square = square.resize((size, size), Image.BICUBIC)
    return np.asarray(square, dtype=np.float32)[:, :, ::-1]


class WD14Tagger:
    """An ONNX WD14 tagger; ``source`` is a hub repo id or a local folder/``model.onnx`` path."""

    def __init__(self, source: str, device: str = "cpu", batch_size: int = 16):
        import onnxruntime as ort

        self.source = source
        self.batch_size = batch_size
        self.model_path = resolve_file(source, "model.onnx")
        self.vocabulary = TagVocabulary.from_csv(resolve_file(source, "selected_tags.csv"))
        providers = ["CPUExecutionProvider"]
        if str(device).startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        options = ort.SessionOptions()
        options.log_severity_level = 3
        self.session = ort.InferenceSession(str(self.model_path), options, providers=providers)
        model_input = self.session.get_inputs()[0]
        self.input_name = model_input.name
        height = model_input.shape[1]
        self.size = height if isinstance(height, int) else 448
        # Some exports have a fixed batch dimension; feed those one image at a time.
        self.fixed_batch = model_input.shape[0] if isinstance(model_input.shape[0], int) else None
        n_out = self.session.get_outputs()[0].shape[-1]
        if isinstance(n_out, int) and n_out != len(self.vocabulary.names):
            raise ValueError(
                f"{self.model_path}: the model has {n_out} outputs but selected_tags.csv lists "
                f"{len(self.vocabulary.names)} tags; the CSV must belong to this model"
            )

    def predict(self, images: list[Image.Image]) -> np.ndarray:
        """(N, n_tags) probabilities, one row per image."""
        step = self.fixed_batch or self.batch_size
        rows = []
        for start in range(0, len(images), step):
            batch = np.stack([preprocess_wd14(im, self.size) for im in images[start : start + step]])
            rows.append(self.session.run(None, {self.input_name: batch})[0])
        return np.concatenate(rows).astype(np.float64) if rows else np.zeros((0, len(self.vocabulary.names)))
