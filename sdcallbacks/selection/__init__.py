"""Decisions from scores: which checkpoints to keep, when to stop, and loading the best back."""

from sdcallbacks.selection.checkpoint import ModelCheckpoint
from sdcallbacks.selection.early_stopping import EarlyStopping, StoppingReason
from sdcallbacks.selection.selection import Decision, MonitorMissingError, Selection
from sdcallbacks.selection.snapshots import load_weights, save_weights

__all__ = [
    "Decision",
    "EarlyStopping",
    "ModelCheckpoint",
    "MonitorMissingError",
    "Selection",
    "StoppingReason",
    "load_weights",
    "save_weights",
]
