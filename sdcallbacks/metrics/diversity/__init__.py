"""Within-prompt diversity across seeds."""

from sdcallbacks.metrics.diversity.clip_diversity import DiversityClip
from sdcallbacks.metrics.diversity.lpips_diversity import Diversity

__all__ = ["Diversity", "DiversityClip"]
