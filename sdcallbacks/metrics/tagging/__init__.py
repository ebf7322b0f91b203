"""Booru tag metrics (WD14 tagger)."""

from sdcallbacks.metrics.tagging.tag_accuracy import TagAccuracy
from sdcallbacks.metrics.tagging.tags import normalize_tag, prompt_tags

__all__ = ["TagAccuracy", "normalize_tag", "prompt_tags"]
