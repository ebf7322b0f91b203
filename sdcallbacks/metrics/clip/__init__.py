"""CLIP text-image and image-image agreement."""

from sdcallbacks.metrics.clip.clip_i import ClipI
from sdcallbacks.metrics.clip.clip_score import ClipScore

__all__ = ["ClipI", "ClipScore"]
