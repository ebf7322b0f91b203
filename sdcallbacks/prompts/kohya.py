"""kohya sd-scripts sample prompt files, in the three forms ``library/train_util.py`` reads (``load_prompts``
and ``line_to_prompt_dict`` of kohya-ss/sd-scripts, read 2026-12):

* ``.txt``: one prompt per line; blank lines and lines starting with ``#`` are skipped; options follow
  the prompt as ``--x value`` (split on ``" --"``, case-insensitive)::

      masterpiece, 1girl, red hair --n lowres, bad hands --w 512 --h 768 --d 42 --s 28 --l 7

* ``.json``: a list whose items are such lines, or dicts with sd-scripts' keys (``prompt``,
  ``negative_prompt``, ``width``, ``height``, ``seed``, ``sample_steps``, ``scale``, ``guidance_scale``,
  ``sample_sampler``, ...);
* ``.toml``: a ``[prompt]`` table of shared keys and ``[[prompt.subset]]`` entries, each merged over it.

What each option becomes: ``--n``/``negative_prompt`` the negative prompt, ``--w``/``--h`` the size,
``--d``/``seed`` the seed, ``--s``/``sample_steps`` the steps (clamped to 1..1000, as sd-scripts clamps
``--s``),
``--l``/``scale`` the guidance scale; ``--g``/``guidance_scale`` is Flux's distilled guidance, which is what
``guidance_scale`` means for Flux here, so where it is given it wins over ``--l`` (sd-scripts' Flux true-CFG
scale, not honoured). The sampler (``--ss``), ControlNet and inpainting images (``--cn``, ``--i``), CFG
truncation and renormalisation (``--ctr``, ``--rcfg``), flow shift (``--fs``) and network multipliers
(``--am``) cannot be honoured per prompt on this pipeline: each is a warning naming the file and line,
as is an option sd-scripts does not know (it ignores those silently). A value of the wrong type is an
error naming the file and line.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from sdcallbacks.config.loading import ConfigError, read_text

logger = logging.getLogger("sdcallbacks")

# option -> (sd-scripts' dict key, type)
LINE_OPTIONS: dict[str, tuple[str, type]] = {
    "n": ("negative_prompt", str),
    "w": ("width", int),
    "h": ("height", int),
    "d": ("seed", int),
    "s": ("sample_steps", int),
    "l": ("scale", float),
    "g": ("guidance_scale", float),
    "ss": ("sample_sampler", str),
    "cn": ("controlnet_image", str),
    "i": ("image", str),
    "ctr": ("cfg_trunc_ratio", float),
    "rcfg": ("renorm_cfg", float),
    "fs": ("flow_shift", str),
    "am": ("additional_network_multiplier", str),
}
NOT_HONOURED = {
    "sample_sampler": "the sampler is the config's sampling.scheduler, one for every prompt",
    "controlnet_image": "no ControlNet in validation sampling",
    "image": "no inpainting source image in validation sampling",
    "cfg_trunc_ratio": "no CFG truncation in the diffusers pipelines",
    "renorm_cfg": "no CFG renormalisation in the diffusers pipelines",
    "flow_shift": "the flow shift is the training scheduler's",
    "additional_network_multiplier": "no per-prompt network multiplier",
}
SHARED_KEYS = {"prompt", "negative_prompt", "width", "height", "guidance_scale"}
KOHYA_ONLY_KEYS = {"seed", "sample_steps", "scale", "enum", "subset", *NOT_HONOURED}


def _warn(where: str, message: str) -> None:
    logger.warning("sdcallbacks: %s: %s; ignored", where, message)


def entry_from_kohya(data: dict[str, Any], where: str) -> dict[str, Any]:
    """A prompt entry (sdcallbacks' keys) from sd-scripts' prompt dict, warning about what is not
    honoured (see the module docstring)."""
    entry: dict[str, Any] = {}
    for key, value in data.items():
        if key in SHARED_KEYS - {"guidance_scale"}:
            entry[key] = value
        elif key == "seed":
            entry["seeds"] = [value]
        elif key == "sample_steps":
            entry["steps"] = max(1, min(1000, int(value))) if isinstance(value, (int, float)) else value
        elif key in NOT_HONOURED:
            _warn(where, f"{key} ({NOT_HONOURED[key]})")
        elif key not in ("scale", "guidance_scale", "enum", "subset"):
            _warn(where, f"{key!r} is not an sd-scripts prompt key")
    if "guidance_scale" in data:
        entry["guidance_scale"] = data["guidance_scale"]
        if "scale" in data:
            _warn(
                where,
                "scale/--l next to guidance_scale/--g (Flux's true-CFG scale; --g is the guidance used)",
            )
    elif "scale" in data:
        entry["guidance_scale"] = data["scale"]
    return entry


def parse_kohya_line(line: str, where: str) -> dict[str, Any] | None:
    """One ``.txt`` line as a prompt entry, or ``None`` for blank and comment lines."""
    text = line.strip()
    if not text or text.startswith("#"):
        return None
    if text.startswith("--"):
        raise ConfigError(where, ["line starts with an option; expected the prompt text first"])
    head, *options = text.split(" --")
    data: dict[str, Any] = {"prompt": head.strip()}
    for option in options:
        name, _, value = option.strip().partition(" ")
        name, value = name.lower(), value.strip()
        if not name:
            continue
        if name not in LINE_OPTIONS:
            _warn(where, f"unknown option --{name} (sd-scripts ignores it too)")
            continue
        key, kind = LINE_OPTIONS[name]
        try:
            data[key] = kind(value) if kind is not str else value
        except ValueError:
            expected = "an integer" if kind is int else "a number"
            raise ConfigError(where, [f"--{name} expects {expected}, got {value!r}"]) from None
    if not data["prompt"]:
        raise ConfigError(where, ["empty prompt before the options"])
    return entry_from_kohya(data, where)


def read_kohya_lines(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """(line number, prompt entry) for every prompt line of a kohya ``.txt`` prompt file, in order."""
    entries = []
    for number, line in enumerate(read_text(path).splitlines(), start=1):
        entry = parse_kohya_line(line, f"{path}:{number}")
        if entry is not None:
            entries.append((number, entry))
    return entries


def read_kohya_file(path: Path) -> list[dict[str, Any]]:
    """All prompt entries of a kohya ``.txt`` prompt file, in order."""
    return [entry for _, entry in read_kohya_lines(path)]


def is_kohya_item(item: Any) -> bool:
    """Whether a ``.json`` list item is sd-scripts' (a line, or a dict with one of its own keys)."""
    return isinstance(item, str) or (isinstance(item, dict) and bool(KOHYA_ONLY_KEYS & set(item)))


def kohya_json_items(items: list[Any], path: Path) -> list[tuple[str, Any]]:
    """(where, entry) for each item of sd-scripts' ``.json`` list (lines parsed, dicts translated)."""
    out = []
    for i, item in enumerate(items):
        where = f"{path}: [{i}]"
        entry = parse_kohya_line(item, where) if isinstance(item, str) else entry_from_kohya(item, where)
        if entry is not None:
            out.append((f"[{i}]: ", entry))
    return out


def is_kohya_toml(data: Any) -> bool:
    return isinstance(data, dict) and isinstance(data.get("prompt"), dict) and "subset" in data["prompt"]


def kohya_toml_items(data: dict[str, Any], path: Path) -> list[tuple[str, Any]]:
    """(where, entry) for each ``[[prompt.subset]]`` of sd-scripts' ``.toml``, over the ``[prompt]`` keys."""
    shared = {k: v for k, v in data["prompt"].items() if k != "subset"}
    subsets = data["prompt"]["subset"]
    if not isinstance(subsets, list):
        raise ConfigError(path, ["prompt.subset: expected a list of tables ([[prompt.subset]])"])
    return [
        (f"prompt.subset.{i}: ", entry_from_kohya({**shared, **subset}, f"{path}: prompt.subset[{i}]"))
        for i, subset in enumerate(subsets)
    ]
