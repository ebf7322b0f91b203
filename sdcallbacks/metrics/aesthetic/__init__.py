"""Aesthetic predictors."""

from sdcallbacks.metrics.aesthetic.anime import AestheticAnime
from sdcallbacks.metrics.aesthetic.laion import AestheticLaion, AestheticMLP, load_aesthetic_head

__all__ = ["AestheticAnime", "AestheticLaion", "AestheticMLP", "load_aesthetic_head"]
