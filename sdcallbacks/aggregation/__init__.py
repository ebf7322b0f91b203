"""Per-image records and their per-validation aggregates."""

from sdcallbacks.aggregation.records import ImageRecord, aggregate

__all__ = ["ImageRecord", "aggregate"]
