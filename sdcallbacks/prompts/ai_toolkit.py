"""ai-toolkit's sample prompts, read from its job config as it is (``config.process[i].sample``, or a bare
``sample`` block), after ``SampleConfig`` of ostris/ai-toolkit (``toolkit/config_modules.py``, read 2026-12)::

    config:
      process:
        - type: sd_trainer
          trigger_word: p3r5on
          sample:
            sampler: flowmatch
            width: 1024
            height: 1024
            prompts:
              - "[trigger] holding a sign that says 'I LOVE PROMPTS!'"
            neg: ""
            seed: 42
            walk_seed: true
            guidance_scale: 4
            sample_steps: 20

``[trigger]`` becomes the process's ``trigger_word``; ``seed`` (default 0) is each prompt's seed, plus the
prompt's index with ``walk_seed``; ``neg`` the negative prompt; ``width``/``height`` (default 512),
``guidance_scale`` (7) and ``sample_steps`` (20) as ai-toolkit defaults them. A prompt may be a string or a
mapping with ``prompt`` and its own values of those keys. ``sampler``, ``network_multiplier`` and
``guidance_rescale`` cannot be honoured here: a warning naming the file.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from sdcallbacks.config.loading import ConfigError

logger = logging.getLogger("sdcallbacks")

DEFAULTS = {"width": 512, "height": 512, "seed": 0, "guidance_scale": 7, "sample_steps": 20}
NOT_HONOURED = {
    "sampler": "the sampler is the config's sampling.scheduler",
    "network_multiplier": "the LoRA is applied at its trained scale",
    "guidance_rescale": "no guidance rescale in validation sampling",
}
NEUTRAL = {"network_multiplier": 1, "guidance_rescale": 0.0}


def sample_blocks(data: Any) -> list[tuple[dict[str, Any], str | None, str]]:
    """(sample block, trigger word, where) of every process in an ai-toolkit config (or a bare block)."""
    if not isinstance(data, dict):
        return []
    if isinstance(data.get("sample"), dict):
        return [(data["sample"], data.get("trigger_word"), "sample")]
    processes = (data.get("config") or {}).get("process") if isinstance(data.get("config"), dict) else None
    if not isinstance(processes, list):
        return []
    return [
        (process["sample"], process.get("trigger_word"), f"config.process.{i}.sample")
        for i, process in enumerate(processes)
        if isinstance(process, dict) and isinstance(process.get("sample"), dict)
    ]


def ai_toolkit_items(data: Any, path: Path) -> list[tuple[str, dict[str, Any]]]:
    """(where, prompt entry) for every sample prompt of an ai-toolkit config."""
    out = []
    for block, trigger, where in sample_blocks(data):
        for key, why in NOT_HONOURED.items():
            if key in block and block[key] != NEUTRAL.get(key, object()):
                logger.warning("sdcallbacks: %s: %s.%s (%s); ignored", path, where, key, why)
        prompts = block.get("samples", block.get("prompts"))
        if not isinstance(prompts, list):
            raise ConfigError(path, [f"{where}.prompts: expected a list of prompts"])
        for i, item in enumerate(prompts):
            own = item if isinstance(item, dict) else {"prompt": item}
            values = {**DEFAULTS, **{k: v for k, v in block.items() if k in DEFAULTS or k == "neg"}, **own}
            text = str(values.get("prompt", ""))
            if "[trigger]" in text:
                if not trigger:
                    raise ConfigError(
                        path, [f"{where}.prompts.{i}: [trigger] but the process sets no trigger_word"]
                    )
                text = text.replace("[trigger]", str(trigger))
            seed = int(values["seed"]) + (i if block.get("walk_seed") else 0)
            entry = {
                "prompt": text,
                "seeds": [seed],
                "width": values["width"],
                "height": values["height"],
                "steps": values["sample_steps"],
                "guidance_scale": values["guidance_scale"],
            }
            if values.get("neg"):
                entry["negative_prompt"] = values["neg"]
            out.append((f"{where}.prompts.{i}: ", entry))
    return out
