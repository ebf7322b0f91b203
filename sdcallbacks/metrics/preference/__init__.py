"""Human-preference models: which of two images people pick for a prompt (PickScore, HPS v2, ImageReward)."""

from sdcallbacks.metrics.preference import hpsv2, image_reward, pickscore  # noqa: F401  (imported to register)
