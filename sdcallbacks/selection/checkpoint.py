"""Keeps the weights of the best validation so far (Lightning ``ModelCheckpoint`` with ``save_top_k=1``).

A score becomes the best only if it is strictly better than the current best; NaN is never best.
A LoRA is saved in diffusers format (``pytorch_lora_weights.safetensors``, loadable with
``pipe.load_lora_weights(path)``) from a detached CPU copy, since peft's state dicts alias the live
parameters; a full fine-tune saves the UNet with ``save_pretrained``. Each save goes to a temporary
folder that is renamed into place, and the previous best is deleted afterwards.
"""

from __future__ import annotations

import math
import os
import shutil
import uuid
from pathlib import Path
from typing import Any, Literal

import torch

from sdcallbacks.sampling.pipeline import TrainingModules, unwrap


def lora_state_dicts(modules: TrainingModules) -> dict[str, dict[str, torch.Tensor]]:
    """Detached CPU copies of the LoRA layers in diffusers format, by ``save_lora_weights`` argument."""
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft.utils import get_peft_model_state_dict

    out = {}
    for argument, module in (
        ("unet_lora_layers", modules.unet),
        ("text_encoder_lora_layers", modules.text_encoder),
    ):
        module = unwrap(module)
        if module is not None and getattr(module, "peft_config", None):
            state = get_peft_model_state_dict(module)
            out[argument] = {
                k: v.detach().to("cpu", copy=True) for k, v in convert_state_dict_to_diffusers(state).items()
            }
    return out


def save_weights(modules: TrainingModules, folder: Path) -> None:
    """Write the trained weights into ``folder`` (LoRA if adapters are present, else the full UNet)."""
    layers = lora_state_dicts(modules)
    if layers:
        from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

        pipeline_cls = StableDiffusionXLPipeline if modules.is_sdxl else StableDiffusionPipeline
        pipeline_cls.save_lora_weights(folder, safe_serialization=True, **layers)
    else:
        unwrap(modules.unet).save_pretrained(folder / "unet", safe_serialization=True)


class BestCheckpoint:
    def __init__(self, dirpath: Path, monitor: str, mode: Literal["min", "max"] = "max"):
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        self.dirpath = Path(dirpath)
        self.monitor = monitor
        self.mode = mode
        self.best_model_path: str | None = None
        self.best_model_score: float | None = None
        self.best_step: int | None = None

    def is_improvement(self, score: float) -> bool:
        if score is None or math.isnan(score):
            return False
        if self.best_model_score is None:
            return True
        return score < self.best_model_score if self.mode == "min" else score > self.best_model_score

    def update(self, score: float, step: int, modules: TrainingModules) -> bool:
        """Save the current weights if ``score`` is a new best; return whether it was."""
        if not self.is_improvement(score):
            return False
        self.dirpath.mkdir(parents=True, exist_ok=True)
        final = self.dirpath / f"best-step_{step:07d}"
        staging = self.dirpath / f".tmp-{uuid.uuid4().hex}"
        try:
            save_weights(modules, staging)
            if final.exists():
                shutil.rmtree(final)
            os.replace(staging, final)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        previous = self.best_model_path
        self.best_model_path, self.best_model_score, self.best_step = str(final), float(score), step
        if previous and Path(previous) != final:
            shutil.rmtree(previous, ignore_errors=True)
        return True

    def state_dict(self) -> dict[str, Any]:
        return {
            "best_model_path": self.best_model_path,
            "best_model_score": self.best_model_score,
            "best_step": self.best_step,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best_model_path = state["best_model_path"]
        self.best_model_score = state["best_model_score"]
        self.best_step = state["best_step"]
