"""The validation prompt set: config entries and prompt files resolved into image jobs.

Every image is one :class:`ImageJob` with its own seed, derived from (base seed, prompt index, image
index) unless the prompt pins its seeds. The job list is the unit that batching and process splitting
work on, so the same job gives the same pixels however the list is cut.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from sdcallbacks.config.loading import ConfigError, format_validation_error
from sdcallbacks.config.schema import PromptDefaults, PromptEntry, RunConfig
from sdcallbacks.prompts.kohya import read_kohya_file
from sdcallbacks.prompts.names import sanitize_name, unique_names

# Derived seeds are base + SEED_STRIDE * prompt_index + image_index: readable and collision-free
# while a prompt asks for fewer than SEED_STRIDE images.
SEED_STRIDE = 10_000


@dataclass(frozen=True)
class PromptSpec:
    """One prompt with every sampling setting resolved."""

    index: int
    name: str
    prompt: str
    negative_prompt: str
    seeds: tuple[int, ...]
    width: int
    height: int
    steps: int
    guidance_scale: float


@dataclass(frozen=True)
class ImageJob:
    """One validation image: which prompt, which seed, and its place in the grid."""

    prompt: PromptSpec
    image_index: int
    seed: int

    @property
    def key(self) -> tuple[int, int]:
        return (self.prompt.index, self.image_index)

    @property
    def file_stem(self) -> str:
        return f"{self.prompt.name}_s{self.seed}"


def _read_prompt_file(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise ConfigError(path, ["prompt file not found"])
    suffix = path.suffix.lower()
    if suffix == ".txt":
        return read_kohya_file(path)
    text = path.read_text(encoding="utf-8")
    try:
        data = yaml.safe_load(text) if suffix in (".yaml", ".yml") else json.loads(text)
    except (yaml.YAMLError, json.JSONDecodeError) as err:
        raise ConfigError(path, [f"cannot parse: {err}"]) from err
    if suffix not in (".yaml", ".yml", ".json"):
        raise ConfigError(path, [f"unknown prompt file extension {suffix!r}: expected .txt, .yaml or .json"])
    if isinstance(data, dict) and "prompts" in data:
        data = data["prompts"]
    if not isinstance(data, list):
        raise ConfigError(path, ["expected a list of prompt entries (or a mapping with key 'prompts')"])
    return data


def _validate_entries(raw: list[Any], where: Path) -> list[PromptEntry]:
    entries = []
    for i, item in enumerate(raw):
        if isinstance(item, str):
            item = {"prompt": item}
        try:
            entries.append(PromptEntry.model_validate(item))
        except ValidationError as err:
            raise ConfigError(
                where, [f"prompts.{i}.{line}" for line in format_validation_error(err)]
            ) from None
    return entries


def resolve_prompts(entries: list[PromptEntry], defaults: PromptDefaults, base_seed: int) -> list[PromptSpec]:
    """Apply defaults, name and seed every prompt."""
    names = unique_names(
        [
            sanitize_name(e.name if e.name is not None else e.prompt[:40], fallback=f"prompt_{i:03d}")
            for i, e in enumerate(entries)
        ]
    )
    specs = []
    for i, (entry, name) in enumerate(zip(entries, names)):
        count = entry.num_images or (len(entry.seeds) if entry.seeds else defaults.num_images)
        if entry.seeds is not None and len(entry.seeds) < count:
            # A single pinned seed (kohya's --d) with several images continues upwards from it.
            seeds = tuple(entry.seeds) + tuple(
                entry.seeds[-1] + k for k in range(1, count - len(entry.seeds) + 1)
            )
        elif entry.seeds is not None:
            seeds = tuple(entry.seeds)
        else:
            if count >= SEED_STRIDE:
                raise ConfigError(
                    None, [f"prompts.{i}.num_images: at most {SEED_STRIDE - 1} images per prompt"]
                )
            seeds = tuple(base_seed + SEED_STRIDE * i + k for k in range(count))
        specs.append(
            PromptSpec(
                index=i,
                name=name,
                prompt=entry.prompt,
                negative_prompt=entry.negative_prompt
                if entry.negative_prompt is not None
                else defaults.negative_prompt,
                seeds=seeds,
                width=entry.width or defaults.width,
                height=entry.height or defaults.height,
                steps=entry.steps or defaults.steps,
                guidance_scale=entry.guidance_scale
                if entry.guidance_scale is not None
                else defaults.guidance_scale,
            )
        )
    return specs


def load_prompts(config: RunConfig) -> list[PromptSpec]:
    """The config's inline prompts followed by those of each prompt file, in order."""
    entries = list(config.prompts)
    for path in config.prompt_files:
        raw = _read_prompt_file(Path(path))
        if not raw:
            raise ConfigError(path, ["prompt file holds no prompts"])
        entries.extend(_validate_entries(raw, Path(path)))
    if not entries:
        raise ConfigError(None, ["prompts: no validation prompts"])
    return resolve_prompts(entries, config.defaults, config.seed)


def expand_jobs(prompts: list[PromptSpec]) -> list[ImageJob]:
    """Every (prompt, seed) pair, prompt-major: the order of the grid and of ``metrics.jsonl``."""
    return [ImageJob(p, k, seed) for p in prompts for k, seed in enumerate(p.seeds)]
