"""The validation prompt set: config entries and prompt files resolved into image jobs.

Every image is one :class:`ImageJob` with its own seed, derived from (base seed, prompt index, image
index) unless the prompt pins its seeds. The job list is the unit that batching and process splitting
work on, so the same job gives the same pixels however the list is cut.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from sdcallbacks.config.base import SEED_MAX, SEED_MIN
from sdcallbacks.config.loading import ConfigError, format_validation_error, parse_structured
from sdcallbacks.config.schema import PromptDefaults, PromptEntry, RunConfig
from sdcallbacks.prompts.ai_toolkit import ai_toolkit_items, sample_blocks
from sdcallbacks.prompts.kohya import (
    is_kohya_item,
    is_kohya_toml,
    kohya_json_items,
    kohya_toml_items,
    read_kohya_lines,
)
from sdcallbacks.prompts.names import sanitize_name, unique_names
from sdcallbacks.prompts.onetrainer import is_onetrainer_samples, onetrainer_items

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


def _read_prompt_file(path: Path) -> list[tuple[str, Any]]:
    """(where in the file, raw entry) pairs, the prefixes of the entry's field errors. Read as they are:
    kohya sd-scripts' ``.txt``/``.json``/``.toml`` (:mod:`.kohya`), ai-toolkit's job config
    (:mod:`.ai_toolkit`), OneTrainer's sample definitions (:mod:`.onetrainer`), or sdcallbacks' own
    list of prompt entries (YAML/JSON/TOML, or a mapping with ``prompts``)."""
    if not path.is_file():
        raise ConfigError(path, ["prompt file not found"])
    if path.suffix.lower() == ".txt":
        return [(f"line {number}: ", entry) for number, entry in read_kohya_lines(path)]
    data = parse_structured(path, suffixes=(".yaml", ".yml", ".json", ".toml"))
    if is_kohya_toml(data):
        return kohya_toml_items(data, path)
    if sample_blocks(data):
        return ai_toolkit_items(data, path)
    if isinstance(data, dict) and "prompts" in data:
        data = data["prompts"]
    if not isinstance(data, list):
        raise ConfigError(
            path,
            [
                "expected a list of prompt entries (or a mapping with key 'prompts'), kohya's [prompt] table "
                "with [[prompt.subset]], or an ai-toolkit config with a sample block"
            ],
        )
    if path.suffix.lower() == ".json" and is_onetrainer_samples(data):
        return onetrainer_items(data, path)
    if path.suffix.lower() == ".json" and any(map(is_kohya_item, data)):
        return kohya_json_items(data, path)
    return [(f"prompts.{i}.", item) for i, item in enumerate(data)]


def _validate_entries(raw: list[tuple[str, Any]], where: Path) -> list[PromptEntry]:
    entries = []
    for label, item in raw:
        if isinstance(item, str):
            item = {"prompt": item}
        try:
            entries.append(PromptEntry.model_validate(item))
        except ValidationError as err:
            raise ConfigError(where, [label + line for line in format_validation_error(err)]) from None
    return entries


def resolve_prompts(
    entries: list[PromptEntry], defaults: PromptDefaults, base_seed: int, source: Path | None = None
) -> list[PromptSpec]:
    """Apply defaults, name and seed every prompt (``source``: the config file, for located errors)."""
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
                    source, [f"prompts.{i}.num_images: at most {SEED_STRIDE - 1} images per prompt"]
                )
            seeds = tuple(base_seed + SEED_STRIDE * i + k for k in range(count))
        if not SEED_MIN <= min(seeds) <= max(seeds) <= SEED_MAX:
            raise ConfigError(
                source,
                [
                    f"prompts.{i}: seeds {min(seeds)}..{max(seeds)} leave the range torch generators accept "
                    f"({SEED_MIN}..{SEED_MAX}); derived seeds are seed + {SEED_STRIDE} * prompt_index + "
                    "image_index, so lower seed"
                ],
            )
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
        raise ConfigError(config.source, ["prompts: no validation prompts"])
    return resolve_prompts(entries, config.defaults, config.seed, config.source)


def expand_jobs(prompts: list[PromptSpec]) -> list[ImageJob]:
    """Every (prompt, seed) pair, prompt-major: the order of the grid and of ``metrics.jsonl``."""
    return [ImageJob(p, k, seed) for p in prompts for k, seed in enumerate(p.seeds)]
