"""Booru tag metrics (WD14 tagger)."""

from sdcallbacks.metrics.tagging.tag_accuracy import TagAccuracy
from sdcallbacks.metrics.tagging.tags import normalize_tag, prompt_tags
from sdcallbacks.metrics.tagging.wd14 import TagVocabulary, WD14Tagger, preprocess_wd14

__all__ = ["TagAccuracy", "TagVocabulary", "WD14Tagger", "normalize_tag", "preprocess_wd14", "prompt_tags"]
