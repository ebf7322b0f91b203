"""Reading images for backbones: any PIL mode to 8 bits (transparency kept), each backbone's own RGB
conversion (:func:`on_white` or :func:`drop_alpha`, as its reference does), and folders of images with
counted skips."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

logger = logging.getLogger("sdcallbacks")

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"})


def to_8bit(image: Image.Image) -> Image.Image:
    """``RGB``, or ``RGBA`` where the image has transparency (kept: each backbone's reference treats it in
    its own way); 16-bit and float modes scaled to 8 bits."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        array = np.asarray(image, dtype=np.float64)
        scale = 255.0 / 65535.0 if image.mode.startswith("I;16") or array.max() > 255 else 1.0
        image = Image.fromarray(np.clip(array * scale, 0, 255).astype(np.uint8), "L")
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        return image.convert("RGBA")
    return image.convert("RGB")


def on_white(image: Image.Image) -> Image.Image:
    """RGB with transparency composited onto white: the preprocessing of SmilingWolf's WD14 tagger,
    deepghs' CCIP (``force_background="white"``) and the anime aesthetic predictor."""
    image = to_8bit(image)
    if image.mode == "RGB":
        return image
    canvas = Image.new("RGBA", image.size, (255, 255, 255, 255))
    canvas.alpha_composite(image)
    return canvas.convert("RGB")


def drop_alpha(image: Image.Image) -> Image.Image:
    """RGB with the alpha channel dropped, so colours under transparent pixels show: PIL's
    ``convert("RGB")``, as in OpenAI CLIP's and open_clip's preprocessing, the LAION aesthetic predictor,
    LPIPS, torchvision models, facenet-pytorch and clean-fid/torchmetrics image loading."""
    return to_8bit(image).convert("RGB")


class ImageFolderError(ValueError):
    """A reference or input folder that cannot be used (missing, empty, nothing readable)."""


@dataclass
class ImageFolder:
    """The readable images of a folder (recursive, sorted by path); unreadable files are counted skips."""

    root: Path
    paths: list[Path] = field(default_factory=list)
    images: list[Image.Image] = field(default_factory=list)
    skipped: dict[Path, str] = field(default_factory=dict)

    @classmethod
    def read(cls, root: str | Path, what: str = "reference images") -> ImageFolder:
        root = Path(root).expanduser()
        candidates = image_files(root, what)
        folder = cls(root)
        for path in candidates:
            try:
                image = read_image(path)
            except UNREADABLE as err:
                folder.skipped[path] = f"{type(err).__name__}: {err}"
                logger.warning("sdcallbacks: skipping unreadable image %s (%s)", path, err)
                continue
            folder.paths.append(path)
            folder.images.append(image)
        if not folder.images:
            raise ImageFolderError(f"{what}: none of the {len(candidates)} images in {root} could be read")
        return folder


UNREADABLE = (OSError, ValueError, Image.DecompressionBombError)


def read_image(path: Path) -> Image.Image:
    """One image file, decoded whole, in 8 bits with its transparency (raises one of :data:`UNREADABLE`)."""
    with Image.open(path) as opened:
        opened.load()
        return to_8bit(opened)


def image_files(root: Path, what: str) -> list[Path]:
    """The image files below ``root``, sorted; a missing folder or one without images is an error."""
    if not root.is_dir():
        raise ImageFolderError(f"{what}: {root} is not a folder")
    candidates = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not candidates:
        raise ImageFolderError(
            f"{what}: {root} holds no images (looked for {', '.join(sorted(IMAGE_SUFFIXES))})"
        )
    return candidates


def image_folder_problem(root: str | Path, what: str) -> str | None:
    """Why ``root`` cannot serve as a folder of images (missing, empty, nothing readable), or None. Stops
    at the first image that decodes, so a large folder is cheap to check."""
    root = Path(root).expanduser()
    try:
        candidates = image_files(root, what)
    except ImageFolderError as err:
        return str(err)
    for path in candidates:
        try:
            read_image(path)
            return None
        except UNREADABLE:
            continue
    return f"{what}: none of the {len(candidates)} images in {root} could be read"
