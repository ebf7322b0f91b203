"""Writing the trained weights to a folder and loading them back into the live modules.

A LoRA is written by the family pipeline's ``save_lora_weights`` (``pytorch_lora_weights.safetensors``,
loadable with that pipeline's ``load_lora_weights(folder)``) from detached CPU copies: peft's state dicts
alias the live parameters, so an un-copied snapshot would follow training. LoRA tensors are written in
fp32 (:func:`fp32_copy`). A full fine-tune writes the UNet (``unet/``) or transformer (``transformer/``)
with ``save_pretrained``, in the dtype it trains in. Never a pipeline ``save_pretrained``: with an injected
adapter it writes ``base_layer`` keys that no loader reads.

With background scoring (``scoring.mode: async``) the checkpoint decision comes after training has moved
on, so the weights of the validated step are captured first as a :class:`WeightsSnapshot` (CPU copies:
the LoRA layers, or the whole denoiser for a full fine-tune, which costs its size in CPU memory per
validation in flight) and written from there if the step turns out to be worth keeping.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch

from sdcallbacks.sampling.families import Family, resolve_family
from sdcallbacks.sampling.modules import TrainingModules, unwrap

LORA_FILE = "pytorch_lora_weights.safetensors"


def _adapted(modules: TrainingModules, attribute: str) -> torch.nn.Module | None:
    module = unwrap(getattr(modules, attribute))
    return module if module is not None and getattr(module, "peft_config", None) else None


def _adapter_name(module: torch.nn.Module) -> str:
    """The adapter to save: peft's ``default``, else the first one the module has."""
    return "default" if "default" in module.peft_config else next(iter(module.peft_config))


def lora_state_dicts(modules: TrainingModules) -> dict[str, dict]:
    """``save_lora_weights`` arguments of the modules' family: detached CPU copies of the LoRA layers
    (``<module>_lora_layers``) and each adapter's config (``<module>_lora_adapter_metadata``), as diffusers'
    own training scripts pass them: in diffusers' key format for the UNet families, in peft's for SD3 and
    Flux. Without the config a loader rebuilds the adapter with ``lora_alpha = r`` (and no rank or alpha
    patterns, no DoRA), and the LoRA draws other images."""
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft.utils import get_peft_model_state_dict

    family = resolve_family(modules)
    out: dict[str, dict] = {}
    for attribute in family.lora_modules:
        module = _adapted(modules, attribute)
        if module is None:
            continue
        name = _adapter_name(module)
        state = get_peft_model_state_dict(module, adapter_name=name)
        if family.denoiser == "unet":
            state = convert_state_dict_to_diffusers(state)
        out[f"{attribute}_lora_layers"] = {k: fp32_copy(v) for k, v in state.items()}
        out[f"{attribute}_lora_adapter_metadata"] = module.peft_config[name].to_dict()
    return out


def fp32_copy(tensor: torch.Tensor) -> torch.Tensor:
    """A detached CPU copy, in fp32 if it is floating point: LoRA checkpoints are fp32 whatever precision
    training keeps the adapter in (as diffusers' scripts upcast before their final save), so a bf16 run's
    best LoRA loads into an fp32 pipeline without rounding."""
    dtype = torch.float32 if tensor.is_floating_point() else tensor.dtype
    return tensor.detach().to("cpu", dtype=dtype, copy=True)


def _save_lora(arguments: dict[str, dict], family: Family, folder: Path) -> None:
    import diffusers

    getattr(diffusers, family.pipeline).save_lora_weights(folder, safe_serialization=True, **arguments)


@dataclass
class WeightsSnapshot:
    """The trained weights of one step, detached from training: LoRA layers, or the denoiser's state dict
    (with the denoiser itself kept only for its unchanging config)."""

    lora: dict[str, dict]  # save_lora_weights arguments: layers and adapter configs
    family: Family
    state: dict[str, torch.Tensor] | None = None
    denoiser: torch.nn.Module | None = None

    @classmethod
    def capture(cls, modules: TrainingModules) -> WeightsSnapshot:
        family = resolve_family(modules)
        layers = lora_state_dicts(modules)
        if layers:
            return cls(layers, family)
        denoiser = unwrap(modules.denoiser)
        state = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in denoiser.state_dict().items()}
        return cls({}, family, state, denoiser)

    def write(self, folder: Path) -> None:
        if self.lora:
            _save_lora(self.lora, self.family, folder)
            return
        from safetensors.torch import save_file

        target = Path(folder) / self.family.denoiser
        target.mkdir(parents=True, exist_ok=True)
        self.denoiser.save_config(target)
        save_file(self.state, target / "diffusion_pytorch_model.safetensors", metadata={"format": "pt"})


class WeightsWriter(Protocol):
    """Weights that write themselves into a folder: a :class:`WeightsSnapshot`, or a saved checkpoint's
    files (``sdcallbacks.checkpoints.CheckpointFiles``, kept by ``sdcallbacks watch``)."""

    def write(self, folder: Path) -> None: ...


def save_weights(weights: TrainingModules | WeightsWriter, folder: Path) -> None:
    """Write the trained weights into ``folder`` (LoRA if adapters are present, else the full denoiser in
    ``unet/`` or ``transformer/``), from the live modules, a snapshot taken earlier, or a checkpoint's
    own files."""
    if not isinstance(weights, TrainingModules):
        weights.write(folder)
        return
    family = resolve_family(weights)
    layers = lora_state_dicts(weights)
    if layers:
        _save_lora(layers, family, folder)
    else:
        unwrap(weights.denoiser).save_pretrained(folder / family.denoiser, safe_serialization=True)


def load_weights(modules: TrainingModules, folder: Path) -> None:
    """Load weights written by :func:`save_weights` back into the live modules, in place (dtypes and
    devices of the live parameters are kept)."""
    from safetensors.torch import load_file

    folder = Path(folder)
    family = resolve_family(modules)
    if (folder / LORA_FILE).is_file():
        from diffusers.utils import convert_state_dict_to_peft, convert_unet_state_dict_to_peft
        from peft import set_peft_model_state_dict

        state = load_file(folder / LORA_FILE)
        for attribute in family.lora_modules:
            part = {k[len(attribute) + 1 :]: v for k, v in state.items() if k.startswith(attribute + ".")}
            if not part:
                continue
            module = _adapted(modules, attribute)
            if module is None:
                raise ValueError(
                    f"{folder / LORA_FILE} has {attribute} LoRA weights but {attribute} has no adapter"
                )
            if family.denoiser == "unet":  # written in diffusers' format: back to peft's
                convert = (
                    convert_unet_state_dict_to_peft if attribute == "unet" else convert_state_dict_to_peft
                )
                part = convert(part)
            result = set_peft_model_state_dict(module, part)
            if result.unexpected_keys:
                raise ValueError(
                    f"{folder / LORA_FILE}: keys that {attribute}'s adapter does not have, e.g. "
                    f"{result.unexpected_keys[:3]}"
                )
        return
    weights = folder / family.denoiser
    shards = sorted(weights.glob("diffusion_pytorch_model*.safetensors"))  # one, or sharded
    if not shards:
        raise FileNotFoundError(
            f"{folder}: neither {LORA_FILE} nor {family.denoiser}/diffusion_pytorch_model*.safetensors"
        )
    state: dict[str, torch.Tensor] = {}
    for shard in shards:
        state.update(load_file(shard))
    unwrap(modules.denoiser).load_state_dict(state)
