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
import json
import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from sdcallbacks.checkpoints.discovery import Checkpoint, CheckpointError
from sdcallbacks.sampling.families import FAMILIES, resolve_family
from sdcallbacks.sampling.modules import TrainingModules
from sdcallbacks.sampling.variants import has_adapters

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


# diffusers' model types (``infer_diffusers_model_type``) of single-file checkpoints, by family.
SINGLE_FILE_TYPES = {
    "sd": ("v1", "v2"),
    "sdxl": ("xl_base", "playground-v2-5"),
    "sd3": ("sd3", "sd35_large", "sd35_medium"),
    "flux": ("flux-dev", "flux-schnell"),
}


def load_base_pipeline(base: str, dtype: str = "float32", config: str | None = None) -> Any:
    """The diffusers pipeline of ``base``, on the CPU.

    ``base`` is a diffusers folder, a hub id, or a single ``.safetensors``/``.ckpt`` file as kohya and web
    UI users have it, read by diffusers' ``from_single_file``. That needs the diffusers configs of the
    model's components: ``config``, a local diffusers folder of the same architecture (its
    ``model_index.json`` names the pipeline), or else the configs of the model type's default hub repo,
    which offline must already be in the Hugging Face cache.
    """
    from diffusers import DiffusionPipeline

    folder = Path(base)
    # float32 is the default: no dtype argument (diffusers 0.42 renamed torch_dtype to dtype, 0.40 has only
    # torch_dtype, which 0.42 still takes with a deprecation warning).
    options = {} if dtype == "float32" else {"torch_dtype": DTYPES[dtype]}
    if folder.is_file():
        return _load_single_file(folder, config, options)
    if config is not None:
        raise CheckpointError(f"--base-config {config}: only for a single-file --base; {base} is not a file")
    if folder.is_dir() and not (folder / "model_index.json").is_file():
        raise CheckpointError(f"--base {base}: a folder without model_index.json (not a diffusers pipeline)")
    try:
        return DiffusionPipeline.from_pretrained(base, **options)
    except (OSError, ValueError) as err:
        where = "folder" if folder.is_dir() else "hub id (offline, it must be in the Hugging Face cache)"
        raise CheckpointError(f"--base {base}: could not load it as a diffusers {where}: {err}") from err


def _load_single_file(path: Path, config: str | None, options: dict[str, Any]) -> Any:
    import diffusers

    if config is not None:
        index = Path(config) / "model_index.json"
        if not index.is_file():
            raise CheckpointError(
                f"--base-config {config}: no model_index.json there (expected the diffusers folder of a "
                "model of the same architecture as the single file)"
            )
        try:
            pipeline_class = getattr(diffusers, json.loads(index.read_text())["_class_name"])
        except (ValueError, KeyError, AttributeError) as err:
            raise CheckpointError(f"{index}: no diffusers pipeline class in _class_name ({err})") from err
    else:
        pipeline_class = _single_file_pipeline(path)
    try:
        return pipeline_class.from_single_file(str(path), config=config, **options)
    except Exception as err:  # diffusers raises many kinds here; each means "cannot load"
        if config is None and isinstance(err, OSError):  # huggingface_hub's errors: offline, not cached
            raise CheckpointError(
                f"--base {path}: a single-file model, whose component configs diffusers could not get from "
                f"its model type's hub repo (offline they must be in the Hugging Face cache): pass "
                "--base-config with a local diffusers folder of the same architecture (for example a "
                f"download of the model it was trained from) ({type(err).__name__}: {err})"
            ) from err
        raise CheckpointError(f"--base {path}: from_single_file could not load it: {err}") from err


def _single_file_pipeline(path: Path) -> Any:
    """The pipeline class of a single-file checkpoint, from diffusers' own detection of its model type."""
    import diffusers
    from diffusers.loaders.single_file_utils import infer_diffusers_model_type, load_single_file_checkpoint

    try:
        model_type = infer_diffusers_model_type(load_single_file_checkpoint(str(path)))
    except Exception as err:  # a corrupt or foreign file fails in many ways
        raise CheckpointError(f"--base {path}: not a single-file diffusion model checkpoint ({err})") from err
    for family, types in SINGLE_FILE_TYPES.items():
        if model_type in types:
            return getattr(diffusers, FAMILIES[family].pipeline)
    raise CheckpointError(
        f"--base {path}: diffusers reads it as a {model_type!r} model, not one of the families sd, sdxl, "
        "sd3, flux"
    )


def content_hash(checkpoint: Checkpoint) -> str:
    """SHA-256 over the checkpoint's weight files: the same content is the same checkpoint, whatever
    its path (a resumed evaluation skips it)."""
    return files_sha256(checkpoint.weights)


def files_sha256(paths: list[Path]) -> str:
    """SHA-256 over the files' bytes in order (of one file: A1111's model hash is its first 10 digits)."""
    digest = hashlib.sha256()
    for path in paths:
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
