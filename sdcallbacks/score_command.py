"""Scoring existing images with no training: ``sdcallbacks score IMAGES --metrics a,b [--prompts FILE]``.

Each image's prompt (and seed) comes from, in order: the ``--prompts`` file (``.jsonl`` lines
``{"file": ..., "prompt": ..., "seed": ...}`` or a ``.csv`` with columns ``file,prompt[,seed]``; ``file``
relative to the image folder), a same-stem ``.txt`` caption, or the ``parameters`` text a web UI
(AUTOMATIC1111, Forge) writes into its PNGs (first line = prompt, ``Seed: N``). Images of the same prompt
form one prompt group (per-prompt means, diversity). Unreadable images are skipped and counted.
"""

from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from sdcallbacks.aggregation.records import ImageRecord, aggregate, set_values
from sdcallbacks.config.loading import ConfigError, read_text
from sdcallbacks.config.metrics import MetricsConfig
from sdcallbacks.metrics import BackbonePool, ImageBatch, build_metrics
from sdcallbacks.metrics.checks import metric_path_problems
from sdcallbacks.metrics.images import ImageFolder
from sdcallbacks.prompts.library import ImageJob, PromptSpec
from sdcallbacks.prompts.names import sanitize_name, unique_names
from sdcallbacks.prompts.parameters import GenerationParameters
from sdcallbacks.validation.scores import record_scores


@dataclass(frozen=True)
class Caption:
    prompt: str
    seed: int | None = None


def read_prompt_file(path: Path) -> dict[str, Caption]:
    """``file`` → caption from a .jsonl or .csv prompt file; errors name the line."""
    if not path.is_file():
        raise ConfigError(path, ["prompt file not found"])
    out: dict[str, Caption] = {}
    if path.suffix.lower() == ".jsonl":
        rows = []
        for line_no, line in enumerate(read_text(path).splitlines(), start=1):
            if not line.strip():
                continue
            try:
                rows.append((line_no, json.loads(line)))
            except json.JSONDecodeError as err:
                raise ConfigError(path, [f"line {line_no}: not JSON ({err.msg})"]) from None
    elif path.suffix.lower() == ".csv":
        rows = list(enumerate(csv.DictReader(io.StringIO(read_text(path), newline="")), start=2))
    else:
        raise ConfigError(path, [f"unknown extension {path.suffix!r}: expected .jsonl or .csv"])
    for line_no, row in rows:
        if not isinstance(row, dict) or not row.get("file") or row.get("prompt") is None:
            raise ConfigError(path, [f"line {line_no}: expected 'file' and 'prompt'"])
        seed = row.get("seed")
        try:
            out[str(row["file"])] = Caption(str(row["prompt"]), int(seed) if seed not in (None, "") else None)
        except ValueError:
            raise ConfigError(path, [f"line {line_no}: seed must be an integer, got {seed!r}"]) from None
    return out


def caption_of(path: Path, root: Path, mapping: dict[str, Caption]) -> Caption:
    relative = path.relative_to(root).as_posix()
    if relative in mapping:
        return mapping[relative]
    if path.with_suffix(".txt").is_file():
        return Caption(read_text(path.with_suffix(".txt")).strip())
    with Image.open(path) as image:
        parameters = image.info.get("parameters")
    if isinstance(parameters, str) and parameters.strip():
        read = GenerationParameters.from_text(parameters)
        return Caption(read.prompt, read.seed)
    return Caption("")


def jobs_for_folder(folder: ImageFolder, mapping: dict[str, Caption]) -> list[ImageJob]:
    """One job per image; images with the same prompt share a :class:`PromptSpec`."""
    captions = [caption_of(p, folder.root, mapping) for p in folder.paths]
    prompts = list(dict.fromkeys(c.prompt for c in captions))
    names = unique_names([sanitize_name(p[:40], f"prompt{i}") for i, p in enumerate(prompts)])
    counts: dict[str, int] = {}
    specs: dict[str, PromptSpec] = {}
    jobs = []
    for i, caption in enumerate(captions):
        k = counts[caption.prompt] = counts.get(caption.prompt, -1) + 1
        index = prompts.index(caption.prompt)
        spec = specs.setdefault(
            caption.prompt, PromptSpec(index, names[index], caption.prompt, "", (), 0, 0, 0, 0.0)
        )
        jobs.append(ImageJob(spec, k, caption.seed if caption.seed is not None else i))
    return jobs


def metrics_config(names: list[str], config_path: Path | None) -> MetricsConfig:
    """The ``metrics`` section of ``config_path`` (or the file itself), with every named metric enabled."""
    from pydantic import ValidationError

    from sdcallbacks.config.loading import format_validation_error, read_mapping, resolve_metric_paths

    data = read_mapping(config_path) if config_path is not None else {}
    data = dict(data.get("metrics", data))
    for name in names:
        data.setdefault(name, {})
    try:
        config = MetricsConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(config_path, [f"metrics.{line}" for line in format_validation_error(err)]) from None
    if config_path is not None:
        resolve_metric_paths(config, config_path.resolve().parent)
    return config


def score_folder(
    images: Path, names: list[str], prompts: Path | None = None, config: Path | None = None
) -> tuple[list[ImageRecord], dict[str, float], ImageFolder]:
    """Per-image records and aggregates for the named metrics (all enabled ones when ``names`` is empty)."""
    metrics_cfg = metrics_config(names, config)
    problems = metric_path_problems(metrics_cfg)
    if problems:  # before any image is read or model loaded
        raise ConfigError(config, problems)
    enabled = metrics_cfg.enabled()
    if names:  # unknown names were already rejected by the config validation
        enabled = {n: enabled[n] for n in names}
    folder = ImageFolder.read(images, what="images to score")
    jobs = jobs_for_folder(folder, read_prompt_file(prompts) if prompts else {})
    device = metrics_cfg.device or "cpu"
    metrics = build_metrics(enabled, device=device, pool=BackbonePool())
    batch = ImageBatch.of(folder.images, jobs)
    records = [ImageRecord.for_job(0, "score", job, str(path)) for job, path in zip(jobs, folder.paths)]
    sets = record_scores(metrics, batch, records)
    specs = {key: spec for metric in metrics for key, spec in metric.key_specs().items()}
    values = aggregate(records, specs=specs, prefix="score")
    values.update(set_values(sets, prefix="score"))
    values["score/skipped_files"] = float(len(folder.skipped))
    return records, values, folder


def prepare_output(path: Path) -> None:
    """Make sure ``path`` can be written before any scoring starts: its folder is created, the file is not."""
    if path.is_dir():
        raise ConfigError(path, ["--out is a folder; give a file name, e.g. scores.jsonl"])
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(path, [f"cannot write the scores file: {err.strerror or err}"]) from None
    target = path if path.exists() else path.parent
    if not os.access(target, os.W_OK):
        raise ConfigError(path, [f"cannot write the scores file: no write permission on {target}"])


def write_scores(path: Path, records: list[ImageRecord], values: dict[str, float]) -> None:
    with path.open("w", encoding="utf-8") as fh:
        for record in records:
            fh.write(json.dumps(record.to_json()) + "\n")
        fh.write(json.dumps({"type": "aggregate", "values": values}) + "\n")
