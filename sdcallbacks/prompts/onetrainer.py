"""OneTrainer's sample definition files (``training_samples/*.json``): a list of sample dicts with the keys
of OneTrainer's ``SampleConfig`` (``modules/util/config/SampleConfig.py`` of Nerogar/OneTrainer, read
2026-12): ``enabled``, ``prompt``, ``negative_prompt``, ``width``, ``height``, ``seed``, ``random_seed``,
``diffusion_steps``, ``cfg_scale``, ``noise_scheduler``, ...

A sample with ``enabled: false`` is left out, as OneTrainer leaves it out. ``random_seed: true`` draws a new
seed per sample in OneTrainer; here the seed is derived from the run seed instead (validation must repeat),
with a warning. The scheduler (``noise_scheduler``, one per config here), text encoder layer skip (clip
skip), inpainting, flow shift and video frames cannot be honoured per sample: a warning naming the file.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

logger = logging.getLogger("sdcallbacks")

SIGNATURE = {"diffusion_steps", "cfg_scale", "random_seed", "noise_scheduler"}
# key -> (value that changes nothing, why it cannot be honoured)
NOT_HONOURED: dict[str, tuple[Any, str]] = {
    "text_encoder_1_layer_skip": (0, "no clip skip in validation sampling"),
    "text_encoder_2_layer_skip": (0, "no clip skip in validation sampling"),
    "text_encoder_3_layer_skip": (0, "no clip skip in validation sampling"),
    "text_encoder_4_layer_skip": (0, "no clip skip in validation sampling"),
    "sample_inpainting": (False, "no inpainting in validation sampling"),
    "flow_shift": (None, "the flow shift is the training scheduler's"),
    "frames": (1, "images only"),
}


def is_onetrainer_samples(data: Any) -> bool:
    return isinstance(data, list) and any(isinstance(i, dict) and SIGNATURE & set(i) for i in data)


def onetrainer_items(data: list[Any], path: Path) -> list[tuple[str, dict[str, Any]]]:
    """(where, prompt entry) for every enabled sample of a OneTrainer sample definition file."""
    out = []
    schedulers = sorted(
        {str(i["noise_scheduler"]) for i in data if isinstance(i, dict) and "noise_scheduler" in i}
    )
    if schedulers:
        logger.warning(
            "sdcallbacks: %s: noise_scheduler %s (the sampler is the config's sampling.scheduler); ignored",
            path,
            ", ".join(schedulers),
        )
    for i, sample in enumerate(data):
        if not isinstance(sample, dict) or not sample.get("enabled", True):
            continue
        entry: dict[str, Any] = {"prompt": sample.get("prompt", "")}
        for theirs, ours in (
            ("negative_prompt", "negative_prompt"),
            ("width", "width"),
            ("height", "height"),
            ("diffusion_steps", "steps"),
            ("cfg_scale", "guidance_scale"),
        ):
            if sample.get(theirs) not in (None, ""):
                entry[ours] = sample[theirs]
        if sample.get("random_seed"):
            logger.warning(
                "sdcallbacks: %s: [%d]: random_seed (a seed derived from the run seed instead)", path, i
            )
        elif "seed" in sample:
            entry["seeds"] = [sample["seed"]]
        for key, (neutral, why) in NOT_HONOURED.items():
            if key in sample and sample[key] != neutral:
                logger.warning("sdcallbacks: %s: [%d]: %s = %r (%s); ignored", path, i, key, sample[key], why)
        out.append((f"[{i}]: ", entry))
    return out
