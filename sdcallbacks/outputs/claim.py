"""Making ``output_dir`` one run's own before it starts (main process).

A new run refuses an earlier run's outputs (``metrics.jsonl``, ``samples/``, checkpoints), or deletes them
with ``overwrite_output_dir``, so two runs' records never mix; a resumed run appends. Staging folders that
a killed checkpoint save left behind are removed either way.
"""

from __future__ import annotations

import logging
import shutil

from sdcallbacks.outputs.writer import OutputWriter
from sdcallbacks.selection.checkpoint import ModelCheckpoint

logger = logging.getLogger("sdcallbacks")


def claim_output_dir(
    writer: OutputWriter, checkpoint: ModelCheckpoint | None, *, resumed: bool, overwrite: bool
) -> str | None:
    """Why this run cannot use ``writer.output_dir`` (the config problem to raise), or None."""
    if checkpoint is not None:
        checkpoint.remove_orphans()
    previous = writer.previous_outputs()
    previous += checkpoint.previous_checkpoints() if checkpoint is not None else []
    if not previous or resumed:
        return None
    if overwrite:
        logger.warning("sdcallbacks: overwrite_output_dir: deleting %s", ", ".join(map(str, previous)))
        for path in previous:
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()
        return None
    return (
        f"output_dir: {writer.output_dir} holds an earlier run's outputs "
        f"({', '.join(str(p) for p in previous)}); choose another output_dir, set "
        "overwrite_output_dir: true to delete them, or resume that run (accelerator.load_state, "
        "or on_train_start(global_step=...)) to continue it"
    )
