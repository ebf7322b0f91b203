"""Human-preference models: which of two images people pick for a prompt (PickScore, HPS v2)."""

from sdcallbacks.metrics.preference import hpsv2, pickscore  # noqa: F401  (imported to register)
