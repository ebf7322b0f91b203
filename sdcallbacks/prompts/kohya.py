"""kohya sd-scripts prompt files: one prompt per line, ``#`` comments, inline ``--x value`` options.

Grammar (``library/train_util.py`` of kohya-ss/sd-scripts)::

    masterpiece, 1girl, red hair --n lowres, bad hands --w 512 --h 768 --d 42 --s 28 --l 7

``--n`` negative prompt, ``--w``/``--h`` size, ``--d`` seed, ``--s`` steps, ``--l`` guidance scale.
kohya's per-line sampler and ControlNet options (``--ss``, ``--cn``, ``--am``, ``--c``, ``--f``) are
accepted and ignored here, since the sampler is set once in the config. Any other option is an error
that names the file and line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sdcallbacks.config.loading import ConfigError, read_text

_INT_OPTIONS = {"w": "width", "h": "height", "d": "seed", "s": "steps"}
_FLOAT_OPTIONS = {"l": "guidance_scale"}
_IGNORED_OPTIONS = {"ss", "cn", "am", "c", "f"}


def parse_kohya_line(line: str, where: str) -> dict[str, Any] | None:
    """Parse one line into a prompt-entry dict, or ``None`` for blank and comment lines."""
    text = line.strip()
    if not text or text.startswith("#"):
        return None
    head, *options = text.split(" --")
    entry: dict[str, Any] = {"prompt": head.strip()}
    if head.startswith("--"):
        raise ConfigError(where, ["line starts with an option; expected the prompt text first"])
    for option in options:
        key, _, value = option.partition(" ")
        key, value = key.strip(), value.strip()
        if key == "n":
            entry["negative_prompt"] = value
        elif key in _INT_OPTIONS or key in _FLOAT_OPTIONS:
            try:
                entry[_INT_OPTIONS.get(key) or _FLOAT_OPTIONS[key]] = (
                    int(value) if key in _INT_OPTIONS else float(value)
                )
            except ValueError:
                kind = "an integer" if key in _INT_OPTIONS else "a number"
                raise ConfigError(where, [f"--{key} expects {kind}, got {value!r}"]) from None
        elif key in _IGNORED_OPTIONS:
            continue
        else:
            raise ConfigError(where, [f"unknown option --{key} (known: --n --w --h --d --s --l)"])
    if not entry["prompt"]:
        raise ConfigError(where, ["empty prompt before the options"])
    seed = entry.pop("seed", None)
    if seed is not None:
        entry["seeds"] = [seed]
    return entry


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
