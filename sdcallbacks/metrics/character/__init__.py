"""Anime character similarity (CCIP)."""

from sdcallbacks.metrics.character.ccip import Ccip

__all__ = ["Ccip"]
