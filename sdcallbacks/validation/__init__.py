"""The validation core: plan the variants, draw, score, aggregate against the baseline (see :mod:`.core`)."""

from sdcallbacks.validation.baseline import Baseline
from sdcallbacks.validation.core import Validation, validate
from sdcallbacks.validation.result import DrawnVariant, ValidationResult, VariantResult
from sdcallbacks.validation.scores import record_scores

__all__ = [
    "Baseline",
    "DrawnVariant",
    "Validation",
    "ValidationResult",
    "VariantResult",
    "record_scores",
    "validate",
]
