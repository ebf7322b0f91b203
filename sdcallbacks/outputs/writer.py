"""Local outputs, written whatever trackers are on.

Per validation: ``<output_dir>/samples/step_<step>[_<variant>]/`` with ``grid.png`` and one PNG per image.
``<output_dir>/metrics.jsonl``: one ``{"type": "image", ...}`` record per image and one
``{"type": "aggregate", ...}`` record per validation, each appended and flushed (and fsynced) at once, so
a crash loses nothing already scored. ``val_loss`` measured between validations
(``val_loss.every_n_steps``) is a ``{"type": "loss", ...}`` record. Only the main process writes.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from PIL import Image

from sdcallbacks.aggregation.records import ImageRecord
from sdcallbacks.outputs.grid import make_grid, prompt_rows
from sdcallbacks.prompts.library import ImageJob


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN; None reads back as "not scored"
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    return value


class OutputWriter:
    def __init__(self, output_dir: Path):
        self.output_dir = Path(output_dir)
        self.samples_dir = self.output_dir / "samples"
        self.metrics_path = self.output_dir / "metrics.jsonl"

    def previous_outputs(self) -> list[Path]:
        """What an earlier run left here: ``metrics.jsonl`` and a non-empty ``samples/``."""
        found = [self.metrics_path] if self.metrics_path.exists() else []
        if self.samples_dir.is_dir() and any(self.samples_dir.iterdir()):
            found.append(self.samples_dir)
        return found

    def folder_for(self, step: int, variant: str) -> Path:
        suffix = "" if variant == "model" else f"_{variant}"
        folder = self.samples_dir / f"step_{step:07d}{suffix}"
        # Prompt names are sanitised; this guards the invariant anyway.
        if self.samples_dir.resolve() not in folder.resolve().parents:
            raise ValueError(f"refusing to write outside {self.samples_dir}: {folder}")
        return folder

    def write_images(
        self, step: int, variant: str, jobs: list[ImageJob], images: list[Image.Image]
    ) -> list[Path]:
        folder = self.folder_for(step, variant)
        folder.mkdir(parents=True, exist_ok=True)
        paths = []
        for job, image in zip(jobs, images):
            path = folder / f"{job.file_stem}.png"
            if folder.resolve() != path.resolve().parent:
                raise ValueError(f"image name {job.file_stem!r} escapes {folder}")
            image.save(path)
            paths.append(path)
        return paths

    def write_grid(
        self, step: int, variant: str, jobs: list[ImageJob], images: list[Image.Image]
    ) -> Image.Image:
        """Save ``grid.png`` for this validation and return the grid."""
        rows = list(prompt_rows(jobs, images).values())
        grid = make_grid([r[1] for r in rows], [r[0] for r in rows], [r[2] for r in rows])
        path = self.folder_for(step, variant) / "grid.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        grid.save(path)
        return grid

    def _append(self, record: dict[str, Any]) -> None:
        self.metrics_path.parent.mkdir(parents=True, exist_ok=True)
        with self.metrics_path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(_json_safe(record), sort_keys=True) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def append_image_record(self, record: ImageRecord) -> None:
        self._append(record.to_json())

    def append_aggregate(self, step: int, variant: str, values: dict[str, float], **extra: Any) -> None:
        """One validation's aggregates of one variant (``base`` for the baseline validation)."""
        self._append({"type": "aggregate", "step": step, "variant": variant, "values": values, **extra})

    def append_event(self, step: int, event: str, **data: Any) -> None:
        """Something that happened at ``step`` besides scores (``sdcallbacks watch``'s ``early_stop``)."""
        self._append({"type": "event", "step": step, "event": event, **data})

    def append_loss(self, step: int, values: dict[str, float]) -> None:
        """``val_loss`` of the model's weights measured between validations (no images)."""
        self._append({"type": "loss", "step": step, "variant": "model", "values": values})


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """All records of a ``metrics.jsonl``; a torn last line (crash mid-write) is ignored."""
    records = []
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if number == len(lines):
                break
            raise ValueError(f"{path}:{number}: not a JSON record") from None
    return records
