"""The base model loaded once, and each checkpoint's weights swapped into it and back out.

LoRA checkpoints go in with the pipeline's own ``load_lora_weights`` (diffusers converts kohya's, and
several other trainers', key formats itself) and come out with ``unload_lora_weights``, which puts the
base layers back. A full denoiser checkpoint is copied into the base denoiser with ``load_state_dict``
(strict: every key, every shape) and the base weights, kept on the CPU, are copied back afterwards. The
pipeline is never reloaded between checkpoints.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from sdcallbacks.checkpoints.discovery import Checkpoint, CheckpointError
from sdcallbacks.sampling.families import resolve_family
from sdcallbacks.sampling.modules import TrainingModules
from sdcallbacks.sampling.variants import has_adapters

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def load_base_pipeline(base: str, dtype: str = "float32") -> Any:
    """The diffusers pipeline of ``base`` (a diffusers folder or a hub id), on the CPU."""
    from diffusers import DiffusionPipeline

    folder = Path(base)
    if folder.is_file():
        raise CheckpointError(
            f"--base {base}: a single-file model; give its diffusers folder (or hub id) instead "
            "(convert it once with diffusers' from_single_file(...).save_pretrained(folder))"
        )
    if folder.is_dir() and not (folder / "model_index.json").is_file():
        raise CheckpointError(f"--base {base}: a folder without model_index.json (not a diffusers pipeline)")
    # float32 is the default: no dtype argument (diffusers 0.42 renamed torch_dtype to dtype, 0.40 has only
    # torch_dtype, which 0.42 still takes with a deprecation warning).
    options = {} if dtype == "float32" else {"torch_dtype": DTYPES[dtype]}
    try:
        return DiffusionPipeline.from_pretrained(base, **options)
    except (OSError, ValueError) as err:
        where = "folder" if folder.is_dir() else "hub id (offline, it must be in the Hugging Face cache)"
        raise CheckpointError(f"--base {base}: could not load it as a diffusers {where}: {err}") from err


def content_hash(checkpoint: Checkpoint) -> str:
    """SHA-256 over the checkpoint's weight files: the same content is the same checkpoint, whatever
    its path (a resumed evaluation skips it)."""
    digest = hashlib.sha256()
    for path in checkpoint.weights:
        try:
            with open(path, "rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
        except OSError as err:
            raise CheckpointError(f"{path}: cannot be read ({err.strerror or err})") from err
    return digest.hexdigest()


class CheckpointFiles:
    """A checkpoint's own files as the weights a :class:`~sdcallbacks.selection.ModelCheckpoint` keeps: hard
    links where the file system allows (no copy, and the trainer deleting its file frees nothing until
    ours goes too), else copies. What ``save_weights`` writes for live modules, for a saved checkpoint."""

    def __init__(self, checkpoint: Checkpoint):
        self.checkpoint = checkpoint

    def write(self, folder: Path) -> None:
        source = self.checkpoint.path
        Path(folder).mkdir(parents=True, exist_ok=True)
        files = [source] if source.is_file() else sorted(p for p in source.rglob("*") if p.is_file())
        for file in files:
            target = Path(folder) / (file.name if source.is_file() else file.relative_to(source))
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(file, target)
            except OSError:
                shutil.copy2(file, target)


class _UnloadedKeys(logging.Handler):
    """diffusers only warns when a LoRA file has keys the model does not take: collect those warnings."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if "unexpected keys" in message.lower() or "were not used" in message.lower():
            self.messages.append(message)


class CheckpointSwap:
    """Applies one checkpoint at a time to the base pipeline's modules (see the module docstring)."""

    ADAPTER = "checkpoint"

    def __init__(self, pipeline: Any, modules: TrainingModules, base: str):
        self.pipeline = pipeline
        self.modules = modules
        self.base = base
        self.family = resolve_family(modules)
        self._base_state: dict[str, torch.Tensor] | None = None

    @contextlib.contextmanager
    def applied(self, checkpoint: Checkpoint) -> Iterator[None]:
        """``checkpoint``'s weights in the modules inside the block, the base model's after it. A checkpoint
        that does not load is a :class:`CheckpointError` naming it, with the base model left intact."""
        if checkpoint.kind == "lora":
            self._load_lora(checkpoint)
            try:
                yield
            finally:
                self.pipeline.unload_lora_weights()
        else:
            denoiser = self.modules.denoiser
            if self._base_state is None:
                self._base_state = {
                    k: v.detach().to("cpu", copy=True) for k, v in denoiser.state_dict().items()
                }
            try:
                self._load_denoiser(checkpoint, denoiser)
                yield
            finally:
                denoiser.load_state_dict(self._base_state)

    def _load_lora(self, checkpoint: Checkpoint) -> None:
        unloaded = _UnloadedKeys()
        diffusers_logger = logging.getLogger("diffusers")
        diffusers_logger.addHandler(unloaded)
        try:
            self.pipeline.load_lora_weights(str(checkpoint.path), adapter_name=self.ADAPTER)
        except Exception as err:
            self.pipeline.unload_lora_weights()
            raise CheckpointError(
                f"{checkpoint.path}: not a LoRA of the {self.family.name} base model {self.base}: it "
                f"does not load ({type(err).__name__}: {str(err)[:300]})"
            ) from err
        finally:
            diffusers_logger.removeHandler(unloaded)
        if unloaded.messages or not any(map(has_adapters, self.modules.torch_modules())):
            self.pipeline.unload_lora_weights()
            detail = (
                unloaded.messages[0][:300] if unloaded.messages else "no layer of the model took its weights"
            )
            raise CheckpointError(
                f"{checkpoint.path}: not a LoRA of the {self.family.name} base model {self.base}: its "
                f"keys do not match ({detail})"
            )

    def _load_denoiser(self, checkpoint: Checkpoint, denoiser: torch.nn.Module) -> None:
        from safetensors.torch import load_file

        files = [p for p in checkpoint.weights if p.suffix == ".safetensors"]
        try:
            state: dict[str, torch.Tensor] = {}
            for path in files:
                state.update(load_file(path))
            denoiser.load_state_dict(state)
        except Exception as err:
            raise CheckpointError(
                f"{checkpoint.path}: does not load as the {self.family.denoiser} of the "
                f"{self.family.name} base model {self.base} ({type(err).__name__}: {str(err)[:300]})"
            ) from err
