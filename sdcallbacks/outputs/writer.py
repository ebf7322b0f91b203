"""Local outputs, written whatever trackers are on.

Per validation: ``<output_dir>/samples/step_<step>[_<variant>]/`` with ``grid.png`` and one PNG per image.
``<output_dir>/metrics.jsonl``: one ``{"type": "image", ...}`` record per image and one
``{"type": "aggregate", ...}`` record per validation, each appended and flushed (and fsynced) at once, so
a crash loses nothing already scored. ``val_loss`` measured between validations
(``val_loss.every_n_steps``) is a ``{"type": "loss", ...}`` record; what selection made of a validation
(gates, events, Pareto front) a ``{"type": "decision", ...}`` one. Only the main process writes.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from PIL import Image
from PIL.PngImagePlugin import PngInfo

from sdcallbacks.aggregation.records import ImageRecord
from sdcallbacks.outputs.grid import make_grid, prompt_rows
from sdcallbacks.prompts.library import ImageJob
from sdcallbacks.prompts.parameters import GenerationParameters


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN; None reads back as "not scored"
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    return value


class OutputWriter:
    def __init__(self, output_dir: Path, model: dict[str, str] | None = None):
        self.output_dir = Path(output_dir)
        # Fields naming the base model in every image's parameters (``Model``, ``Model_hash``).
        self.model: dict[str, str] = dict(model or {})
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
        self,
        step: int,
        variant: str,
        jobs: list[ImageJob],
        images: list[Image.Image],
        weights: str | None = None,
    ) -> list[Path]:
        """One PNG per image, each with its generation parameters (A1111's ``parameters`` text chunk: the
        sampler's, else the job's settings) and ``Model`` (:attr:`model`), ``Lora`` (``weights``, the
        checkpoint drawn), ``Training step`` and ``Variant``."""
        folder = self.folder_for(step, variant)
        folder.mkdir(parents=True, exist_ok=True)
        paths = []
        for job, image in zip(jobs, images):
            path = folder / f"{job.file_stem}.png"
            if folder.resolve() != path.resolve().parent:
                raise ValueError(f"image name {job.file_stem!r} escapes {folder}")
            image.save(path, pnginfo=self._png_text(job, image, step, variant, weights))
            paths.append(path)
        return paths

    def write_grid(
        self,
        step: int,
        variant: str,
        jobs: list[ImageJob],
        images: list[Image.Image],
        weights: str | None = None,
    ) -> Image.Image:
        """Save ``grid.png`` for this validation and return the grid; its parameters are its first
        image's, as web UIs give their grids."""
        rows = list(prompt_rows(jobs, images).values())
        grid = make_grid([r[1] for r in rows], [r[0] for r in rows], [r[2] for r in rows])
        path = self.folder_for(step, variant) / "grid.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        pnginfo = self._png_text(jobs[0], images[0], step, variant, weights) if jobs else None
        grid.save(path, pnginfo=pnginfo)
        return grid

    def _png_text(
        self, job: ImageJob, image: Image.Image, step: int, variant: str, weights: str | None
    ) -> PngInfo:
        text = image.info.get("parameters")
        if isinstance(text, str):
            parameters = GenerationParameters.from_text(text)
        else:  # drawn elsewhere (a scored folder): the job's own settings
            spec = job.prompt
            parameters = GenerationParameters(spec.prompt, spec.negative_prompt, {"Seed": str(job.seed)})
            if spec.steps:
                parameters = parameters.with_fields(
                    Steps=spec.steps, CFG_scale=f"{spec.guidance_scale:g}", Size=f"{spec.width}x{spec.height}"
                )
        parameters = parameters.with_fields(**self.model, Lora=weights, Training_step=step, Variant=variant)
        info = PngInfo()
        info.add_text("parameters", parameters.to_text())
        return info

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

    def append_decision(self, step: int, values: dict[str, float]) -> None:
        """What the selection made of a validation: ``val/gates/eligible``, ``val/events/<name>``,
        ``val/pareto/...`` (logged beside the validation's aggregates, at its step)."""
        self._append({"type": "decision", "step": step, "variant": "model", "values": values})

    def append_loss(self, step: int, values: dict[str, float]) -> None:
        """``val_loss`` of the model's weights measured between validations (no images)."""
        self._append({"type": "loss", "step": step, "variant": "model", "values": values})


def image_id(image_path: str | Path, run_folder: Path) -> str:
    """An image's id across the tools (the report's rating page, ``calibrate``): its path relative to the
    run folder (``samples/step_0000200/red_s1.png``), or as written when outside it."""
    path, root = Path(image_path), Path(run_folder).resolve()
    if path.is_absolute() and path.resolve().is_relative_to(root):
        return path.resolve().relative_to(root).as_posix()
    return path.as_posix()


def read_metrics(path: Path, torn: list[int] | None = None) -> list[dict[str, Any]]:
    """All records of a ``metrics.jsonl``; a torn last line (crash mid-write) is ignored, its line number
    appended to ``torn`` when given. Any other line that is not JSON is a ``ValueError`` naming it."""
    records = []
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if number == len(lines):
                if torn is not None:
                    torn.append(number)
                break
            raise ValueError(f"{path}:{number}: not a JSON record") from None
    return records
