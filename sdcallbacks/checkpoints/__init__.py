"""Saved checkpoints as a source of weights: finding them in a trainer's output, and swapping each into
the base model (for ``sdcallbacks evaluate``)."""

from sdcallbacks.checkpoints.discovery import (
    Checkpoint,
    CheckpointError,
    Discovery,
    checkpoint_at,
    find_checkpoints,
    parse_position,
    path_state,
    safetensors_header,
)
from sdcallbacks.checkpoints.loading import (
    CheckpointFiles,
    CheckpointSwap,
    content_hash,
    files_sha256,
    load_base_pipeline,
)

__all__ = [
    "Checkpoint",
    "CheckpointError",
    "CheckpointFiles",
    "CheckpointSwap",
    "Discovery",
    "checkpoint_at",
    "content_hash",
    "files_sha256",
    "find_checkpoints",
    "load_base_pipeline",
    "parse_position",
    "path_state",
    "safetensors_header",
]
