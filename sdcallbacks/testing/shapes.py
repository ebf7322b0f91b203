"""Synthetic shapes: a coloured square on a plain background, captioned with booru-style tags.

The tiny world's tagger reads colours, so its tags are meaningful on these images: a model that has
learnt ``yellow square`` draws yellow pixels and the tagger says ``yellow_square``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

# RGB prototypes. Chosen pairwise far apart so the tagger's colour kernels do not overlap.
SQUARE_COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 180, 40),
    "blue": (30, 60, 220),
    "yellow": (235, 215, 20),
    "purple": (150, 40, 190),
}
BACKGROUND_COLOURS: dict[str, tuple[int, int, int]] = {
    "white": (245, 245, 245),
    "black": (15, 15, 15),
}
BASE_COLOURS = ("red", "green", "blue")  # what the tiny base model is pretrained on
CONCEPT_COLOUR = "yellow"  # what the demo's LoRA learns


@dataclass(frozen=True)
class ShapeSample:
    image: Image.Image
    caption: str


def caption_for(colour: str, background: str) -> str:
    return f"{colour} square, {background} background"


def draw_square(
    colour: str,
    background: str,
    size: int,
    rng: np.random.Generator,
    min_frac: float = 0.35,
    max_frac: float = 0.6,
) -> Image.Image:
    """One image: a square of side ``size * U(min_frac, max_frac)`` at a random position."""
    pixels = np.empty((size, size, 3), dtype=np.uint8)
    pixels[:] = BACKGROUND_COLOURS[background]
    side = round(size * rng.uniform(min_frac, max_frac))
    top, left = rng.integers(0, size - side + 1, size=2)
    pixels[top : top + side, left : left + side] = SQUARE_COLOURS[colour]
    return Image.fromarray(pixels, "RGB")


def make_samples(
    colours: tuple[str, ...], backgrounds: tuple[str, ...], count: int, size: int, seed: int
) -> list[ShapeSample]:
    """``count`` samples cycling through every (colour, background) pair."""
    rng = np.random.default_rng(seed)
    pairs = [(c, b) for c in colours for b in backgrounds]
    out = []
    for i in range(count):
        colour, background = pairs[i % len(pairs)]
        out.append(ShapeSample(draw_square(colour, background, size, rng), caption_for(colour, background)))
    return out


def to_tensor(images: list[Image.Image]):
    """Images as a float tensor (N, 3, H, W) in [-1, 1], the VAE's input range."""
    import torch

    array = np.stack([np.asarray(im.convert("RGB"), dtype=np.float32) for im in images])
    return torch.from_numpy(array).permute(0, 3, 1, 2) / 127.5 - 1.0
