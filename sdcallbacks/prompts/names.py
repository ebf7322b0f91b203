"""Prompt names become file names and tracker keys, so they are reduced to a safe alphabet."""

from __future__ import annotations

import re

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
MAX_NAME_LENGTH = 64


def sanitize_name(raw: str, fallback: str) -> str:
    """Map ``raw`` to ``[A-Za-z0-9._-]``, with no leading dot, no ``..`` and at most 64 characters.

    The result can never name a parent folder, an absolute path or a hidden file; an empty result
    becomes ``fallback``.
    """
    name = _UNSAFE.sub("_", raw.strip())
    name = re.sub(r"\.{2,}", "_", name)
    name = re.sub(r"_{2,}", "_", name).strip("._-")
    name = name[:MAX_NAME_LENGTH].rstrip("._-")
    return name or fallback


def unique_names(names: list[str]) -> list[str]:
    """Suffix repeats with ``_2``, ``_3``, ... so that every prompt owns its files and keys."""
    seen: dict[str, int] = {}
    taken = set(names)
    out = []
    for name in names:
        if name not in seen:
            seen[name] = 1
            out.append(name)
            continue
        count = seen[name]
        while True:
            count += 1
            candidate = f"{name}_{count}"
            if candidate not in taken:
                break
        seen[name] = count
        taken.add(candidate)
        out.append(candidate)
    return out
