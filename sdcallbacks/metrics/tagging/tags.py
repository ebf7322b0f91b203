"""Booru prompt → tag normalisation for tag accuracy.

Steps (REFERENCE §1.1): split on ``,``; drop empties and ``<lora:…>``/``<lyco:…>`` network tags; strip
attention syntax (``(tag:1.2)``, ``[tag]``, ``{tag}``, ``((tag))``) while keeping escaped ``\\(`` ``\\)``;
unescape; lower-case; spaces to underscores except inside kaomojis, which keep their own form.
Duplicates are kept once, in first-seen order.
"""

from __future__ import annotations

import re

KAOMOJIS = frozenset(
    [
        "0_0",
        "(o)_(o)",
        "+_+",
        "+_-",
        "._.",
        "<o>_<o>",
        "<|>_<|>",
        "=_=",
        ">_<",
        "3_3",
        "6_9",
        ">_o",
        "@_@",
        "^_^",
        "o_o",
        "u_u",
        "x_x",
        "|_|",
        "||_||",
    ]
)
_NETWORK = re.compile(r"<(lora|lyco|hypernet|lycoris):[^>]*>", re.IGNORECASE)
_WEIGHT = re.compile(r":\s*-?\d+(\.\d+)?\s*$")
_OPEN_L, _CLOSE_R = "\x00", "\x01"  # placeholders for escaped brackets


def _strip_attention(tag: str) -> str:
    tag = tag.replace("\\(", _OPEN_L).replace("\\)", _CLOSE_R)
    # Peel balanced or unbalanced outer brackets and a trailing ":weight" until nothing changes.
    previous = None
    while previous != tag:
        previous = tag
        tag = tag.strip()
        tag = tag.lstrip("([{").rstrip(")]}")
        tag = _WEIGHT.sub("", tag)
    return tag.replace(_OPEN_L, "(").replace(_CLOSE_R, ")")


def normalize_tag(raw: str) -> str:
    """One prompt chunk to a booru tag name (``""`` when nothing is left)."""
    tag = _strip_attention(raw).replace("\\\\", "\\").strip().lower()
    tag = re.sub(r"\s+", " ", tag)
    if tag in KAOMOJIS or tag.replace(" ", "_") in KAOMOJIS:
        return tag.replace(" ", "_") if tag.replace(" ", "_") in KAOMOJIS else tag
    return tag.replace(" ", "_")


def prompt_tags(prompt: str) -> list[str]:
    """Distinct normalised tags of a comma-separated prompt, in order."""
    prompt = _NETWORK.sub("", prompt)
    seen: dict[str, None] = {}
    for chunk in prompt.split(","):
        tag = normalize_tag(chunk)
        if tag:
            seen.setdefault(tag, None)
    return list(seen)
