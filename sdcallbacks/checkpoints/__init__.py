"""Saved checkpoints as a source of weights: finding them in a trainer's output, and swapping each into
the base model (for ``sdcallbacks evaluate``)."""

from sdcallbacks.checkpoints.discovery import (
    Checkpoint,
    CheckpointError,
    Discovery,
    find_checkpoints,
    parse_position,
    safetensors_header,
)
from sdcallbacks.checkpoints.loading import CheckpointSwap, content_hash, file_state, load_base_pipeline

__all__ = [
    "Checkpoint",
    "CheckpointError",
    "CheckpointSwap",
    "Discovery",
    "content_hash",
    "file_state",
    "find_checkpoints",
    "load_base_pipeline",
    "parse_position",
    "safetensors_header",
]
