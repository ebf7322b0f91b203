"""Generation parameters in the A1111 ``parameters`` PNG text chunk, the format web UIs (A1111, Forge,
ComfyUI's readers, civitai) read back to reproduce an image:

    a red square, white background
    Negative prompt: blurry
    Steps: 30, Sampler: DDIM, CFG scale: 7.0, Seed: 1234, Size: 512x512, Model: base, Training step: 500

The prompt (any number of lines), then an optional ``Negative prompt:`` line, then one line of
comma-separated ``key: value`` pairs; a value holding a comma, colon or quote is JSON-quoted (as A1111's
``quote`` does).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

NEGATIVE = "Negative prompt: "
# A1111's own field pattern (modules/infotext_utils.py re_param): a key, then a quoted or plain value.
_FIELD = re.compile(r'\s*([\w ./+\-]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')

# diffusers schedulers by the names web UIs give their samplers.
SAMPLER_NAMES = {
    "DDIMScheduler": "DDIM",
    "DDPMScheduler": "DDPM",
    "EulerDiscreteScheduler": "Euler",
    "EulerAncestralDiscreteScheduler": "Euler a",
    "DPMSolverMultistepScheduler": "DPM++ 2M",
    "PNDMScheduler": "PLMS",
    "LMSDiscreteScheduler": "LMS",
    "HeunDiscreteScheduler": "Heun",
    "FlowMatchEulerDiscreteScheduler": "Euler",
}


@dataclass
class GenerationParameters:
    prompt: str
    negative_prompt: str = ""
    fields: dict[str, str] = field(default_factory=dict)

    @property
    def seed(self) -> int | None:
        value = self.fields.get("Seed")
        return int(value) if value is not None and value.lstrip("-").isdigit() else None

    def with_fields(self, **extra: object) -> GenerationParameters:
        """A copy with ``extra`` fields added (None values left out)."""
        added = {k.replace("_", " "): str(v) for k, v in extra.items() if v is not None}
        return GenerationParameters(self.prompt, self.negative_prompt, {**self.fields, **added})

    def to_text(self) -> str:
        lines = [self.prompt]
        if self.negative_prompt:
            lines.append(NEGATIVE + self.negative_prompt)
        if self.fields:
            lines.append(", ".join(f"{key}: {_quote(value)}" for key, value in self.fields.items()))
        return "\n".join(lines)

    @classmethod
    def from_text(cls, text: str) -> GenerationParameters:
        lines = text.strip().splitlines()
        fields: dict[str, str] = {}
        # The settings line: A1111's test (three "key: value" pairs; a prompt rarely has them), or a line
        # that starts as A1111's always does.
        if lines and (len(_FIELD.findall(lines[-1])) >= 3 or lines[-1].startswith("Steps: ")):
            for key, value in _FIELD.findall(lines.pop()):
                fields[key.strip()] = _unquote(value.strip())
        prompt, negative = [], []
        for line in lines:
            if line.startswith(NEGATIVE) or negative:
                negative.append(line[len(NEGATIVE) :] if not negative else line)
            else:
                prompt.append(line)
        return cls("\n".join(prompt).strip(), "\n".join(negative).strip(), fields)


def sampler_name(scheduler: object) -> str:
    """The web UI name of a diffusers scheduler (its class name where none is shared)."""
    name = type(scheduler).__name__
    return SAMPLER_NAMES.get(name, name)


def _quote(value: str) -> str:
    return json.dumps(value, ensure_ascii=False) if any(c in value for c in ',:"\n') else value


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == '"':
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value
