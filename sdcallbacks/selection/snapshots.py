"""Writing the trained weights to a folder and loading them back into the live modules.

A LoRA is written in diffusers format (``pytorch_lora_weights.safetensors``, loadable with
``pipe.load_lora_weights(folder)``) from detached CPU copies: peft's state dicts alias the live parameters,
so an un-copied snapshot would follow training. A full fine-tune writes the UNet with ``save_pretrained``.
Never a pipeline ``save_pretrained``: with an injected adapter it writes ``base_layer`` keys that no
loader reads.

With background scoring (``scoring.mode: async``) the checkpoint decision comes after training has moved
on, so the weights of the validated step are captured first as a :class:`WeightsSnapshot` (CPU copies:
the LoRA layers, or the whole UNet for a full fine-tune, which costs its size in CPU memory per validation
in flight) and written from there if the step turns out to be worth keeping.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from sdcallbacks.sampling.pipeline import TrainingModules, unwrap

LORA_FILE = "pytorch_lora_weights.safetensors"
# save_lora_weights argument -> (TrainingModules attribute, key prefix in the file)
_LORA_PARTS = {
    "unet_lora_layers": ("unet", "unet"),
    "text_encoder_lora_layers": ("text_encoder", "text_encoder"),
    "text_encoder_2_lora_layers": ("text_encoder_2", "text_encoder_2"),
}


def _adapted(modules: TrainingModules, attribute: str) -> torch.nn.Module | None:
    module = unwrap(getattr(modules, attribute))
    return module if module is not None and getattr(module, "peft_config", None) else None


def _adapter_name(module: torch.nn.Module) -> str:
    """The adapter to save: peft's ``default``, else the first one the module has."""
    return "default" if "default" in module.peft_config else next(iter(module.peft_config))


def lora_state_dicts(modules: TrainingModules) -> dict[str, dict]:
    """``save_lora_weights`` arguments: detached CPU copies of the LoRA layers in diffusers format
    (``<part>_lora_layers``) and each adapter's config (``<part>_lora_adapter_metadata``), as diffusers'
    own training scripts pass them. Without the config a loader rebuilds the adapter with
    ``lora_alpha = r`` (and no rank or alpha patterns, no DoRA), and the LoRA draws other images."""
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft.utils import get_peft_model_state_dict

    out: dict[str, dict] = {}
    for argument, (attribute, _) in _LORA_PARTS.items():
        if argument == "text_encoder_2_lora_layers" and not modules.is_sdxl:
            continue
        module = _adapted(modules, attribute)
        if module is not None:
            name = _adapter_name(module)
            state = convert_state_dict_to_diffusers(get_peft_model_state_dict(module, adapter_name=name))
            out[argument] = {k: v.detach().to("cpu", copy=True) for k, v in state.items()}
            metadata = argument.replace("_lora_layers", "_lora_adapter_metadata")
            out[metadata] = module.peft_config[name].to_dict()
    return out


def _save_lora(arguments: dict[str, dict], is_sdxl: bool, folder: Path) -> None:
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    pipeline_cls = StableDiffusionXLPipeline if is_sdxl else StableDiffusionPipeline
    pipeline_cls.save_lora_weights(folder, safe_serialization=True, **arguments)


@dataclass
class WeightsSnapshot:
    """The trained weights of one step, detached from training: LoRA layers, or the UNet's state dict (with
    the UNet itself kept only for its unchanging config)."""

    lora: dict[str, dict]  # save_lora_weights arguments: layers and adapter configs
    is_sdxl: bool
    unet_state: dict[str, torch.Tensor] | None = None
    unet: torch.nn.Module | None = None

    @classmethod
    def capture(cls, modules: TrainingModules) -> WeightsSnapshot:
        layers = lora_state_dicts(modules)
        if layers:
            return cls(layers, modules.is_sdxl)
        unet = unwrap(modules.unet)
        state = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in unet.state_dict().items()}
        return cls({}, modules.is_sdxl, state, unet)

    def write(self, folder: Path) -> None:
        if self.lora:
            _save_lora(self.lora, self.is_sdxl, folder)
            return
        from safetensors.torch import save_file

        target = Path(folder) / "unet"
        target.mkdir(parents=True, exist_ok=True)
        self.unet.save_config(target)
        save_file(self.unet_state, target / "diffusion_pytorch_model.safetensors", metadata={"format": "pt"})


def save_weights(weights: TrainingModules | WeightsSnapshot, folder: Path) -> None:
    """Write the trained weights into ``folder`` (LoRA if adapters are present, else the full UNet), from
    the live modules or from a snapshot taken earlier."""
    if isinstance(weights, WeightsSnapshot):
        weights.write(folder)
        return
    layers = lora_state_dicts(weights)
    if layers:
        _save_lora(layers, weights.is_sdxl, folder)
    else:
        unwrap(weights.unet).save_pretrained(folder / "unet", safe_serialization=True)


def load_weights(modules: TrainingModules, folder: Path) -> None:
    """Load weights written by :func:`save_weights` back into the live modules, in place (dtypes and
    devices of the live parameters are kept)."""
    from safetensors.torch import load_file

    folder = Path(folder)
    if (folder / LORA_FILE).is_file():
        from diffusers.utils import convert_state_dict_to_peft, convert_unet_state_dict_to_peft
        from peft import set_peft_model_state_dict

        state = load_file(folder / LORA_FILE)
        for attribute, prefix in _LORA_PARTS.values():
            part = {k[len(prefix) + 1 :]: v for k, v in state.items() if k.startswith(prefix + ".")}
            if not part:
                continue
            module = _adapted(modules, attribute)
            if module is None:
                raise ValueError(
                    f"{folder / LORA_FILE} has {prefix} LoRA weights but {attribute} has no adapter"
                )
            convert = convert_unet_state_dict_to_peft if attribute == "unet" else convert_state_dict_to_peft
            result = set_peft_model_state_dict(module, convert(part))
            if result.unexpected_keys:
                raise ValueError(
                    f"{folder / LORA_FILE}: keys that {attribute}'s adapter does not have, e.g. "
                    f"{result.unexpected_keys[:3]}"
                )
        return
    shards = sorted((folder / "unet").glob("diffusion_pytorch_model*.safetensors"))  # one, or sharded
    if not shards:
        raise FileNotFoundError(
            f"{folder}: neither {LORA_FILE} nor unet/diffusion_pytorch_model*.safetensors"
        )
    state: dict[str, torch.Tensor] = {}
    for shard in shards:
        state.update(load_file(shard))
    unwrap(modules.unet).load_state_dict(state)
