"""A captioned PNG grid: one row per prompt, one column per seed."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from typing import TYPE_CHECKING

from PIL import Image, ImageDraw, ImageFont

if TYPE_CHECKING:
    from sdcallbacks.prompts.library import ImageJob

CAPTION_LINES = 2


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has no size argument
        return ImageFont.load_default()


def make_grid(
    rows: list[list[Image.Image | None]],
    row_labels: list[str],
    column_labels: list[list[str]],
    min_cell: int = 128,
) -> Image.Image:
    """Lay out ``rows`` of images (``None`` = missing, drawn grey) with a caption above each row and
    a label under each cell. Small images are upscaled (nearest) to ``min_cell`` so they stay visible."""
    cell_w = max(min_cell, max((im.width for row in rows for im in row if im), default=min_cell))
    cell_h = max(min_cell, max((im.height for row in rows for im in row if im), default=min_cell))
    n_cols = max((len(r) for r in rows), default=1)
    font_size = max(10, min(16, cell_w // 10))
    font = _font(font_size)
    line_h = font_size + 4
    caption_h = line_h * CAPTION_LINES + 4
    label_h = line_h + 2
    width = n_cols * cell_w
    height = len(rows) * (caption_h + cell_h + label_h)
    grid = Image.new("RGB", (max(width, 1), max(height, 1)), (255, 255, 255))
    draw = ImageDraw.Draw(grid)
    chars_per_line = max(8, width // max(1, int(font_size * 0.6)))
    y = 0
    for row, caption, labels in zip(rows, row_labels, column_labels):
        wrapped = textwrap.wrap(caption, chars_per_line)[:CAPTION_LINES] or [""]
        for i, text in enumerate(wrapped):
            draw.text((4, y + 2 + i * line_h), text, fill=(0, 0, 0), font=font)
        y += caption_h
        for col, image in enumerate(row):
            x = col * cell_w
            if image is None:
                draw.rectangle([x, y, x + cell_w - 1, y + cell_h - 1], fill=(200, 200, 200))
            else:
                scale = max(1, min(cell_w // image.width, cell_h // image.height))
                shown = image.resize((image.width * scale, image.height * scale), Image.NEAREST)
                grid.paste(shown, (x + (cell_w - shown.width) // 2, y + (cell_h - shown.height) // 2))
            if col < len(labels):
                draw.text((x + 4, y + cell_h + 1), labels[col], fill=(60, 60, 60), font=font)
        y += cell_h + label_h
    return grid


def prompt_rows(
    jobs: Sequence[ImageJob], images: Sequence[Image.Image]
) -> dict[str, tuple[str, list[Image.Image], list[str]]]:
    """By prompt name, in prompt order: (caption, the prompt's images, "seed N" labels)."""
    rows: dict[str, tuple[str, list[Image.Image], list[str]]] = {}
    for job, image in sorted(zip(jobs, images), key=lambda pair: pair[0].prompt.index):
        caption = f"{job.prompt.name}: {job.prompt.prompt}"
        entry = rows.setdefault(job.prompt.name, (caption, [], []))
        entry[1].append(image)
        entry[2].append(f"seed {job.seed}")
    return rows


def prompt_grids(jobs: Sequence[ImageJob], images: Sequence[Image.Image]) -> dict[str, Image.Image]:
    """One captioned single-row grid per prompt (its seeds), by prompt name."""
    return {
        name: make_grid([row], [caption], [labels])
        for name, (caption, row, labels) in prompt_rows(jobs, images).items()
    }
