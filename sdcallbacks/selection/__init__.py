"""Decisions from scores: the best checkpoint and early stopping."""

from sdcallbacks.selection.checkpoint import BestCheckpoint, save_weights
from sdcallbacks.selection.early_stopping import EarlyStopping, StoppingReason

__all__ = ["BestCheckpoint", "EarlyStopping", "StoppingReason", "save_weights"]
