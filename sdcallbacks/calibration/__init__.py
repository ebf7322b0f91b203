"""``sdcallbacks calibrate``: the metrics checked against a person's own ratings, and a ``score:`` block
fitted to them (see :mod:`.fit`)."""

from sdcallbacks.calibration.data import Ratings, ScoreTable, read_ratings, read_scores
from sdcallbacks.calibration.fit import Calibration, calibrate
from sdcallbacks.calibration.summary import summary_markdown, write_calibration

__all__ = [
    "Calibration",
    "Ratings",
    "ScoreTable",
    "calibrate",
    "read_ratings",
    "read_scores",
    "summary_markdown",
    "write_calibration",
]
