"""``val_loss``: the denoising loss on held-out images at fixed timesteps with fixed noise.

No sampling: per held-out image, the VAE latent is noised at each configured timestep (kohya's
200/400/600/800 of 1000 by default) with noise drawn once from a per-image seed, and the UNet's prediction is
compared with its target (the noise, or the velocity for v-prediction) by mean squared error. Same images,
same noise, same timesteps every time, so the curve moves only with the weights. Logged as ``val/val_loss``
(mean over timesteps and images) and ``val/val_loss/t<t>``.

Captions come from the folder's ``metadata.jsonl`` (diffusers' ``imagefolder`` layout: ``file_name`` and
``text`` per line, what diffusers' text-to-image scripts and the tiny world's ``concept/`` use), else from a
same-stem ``.txt`` file; an image with neither is skipped and counted (a warning at first use), never
paired with an empty prompt.

Images are prepared as diffusers' DreamBooth scripts prepare training images: EXIF orientation applied,
``convert("RGB")`` (alpha dropped, not composited), torchvision ``Resize(resolution, BILINEAR)`` of the short
side, ``CenterCrop``, then [-1, 1]. One difference on purpose: the latent is the VAE's distribution **mean**,
not a sample as in training, so the loss is deterministic (times the VAE's scaling factor, after its shift).

It runs with the sampler's protections: every global random stream restored, every submodule in eval mode
and restored after, no gradients, autocast matching ``mixed_precision``, the training scheduler untouched
(``add_noise`` and ``get_velocity`` read it without changing it). The noise scheduler must noise as DDPM
does (:data:`DDPM_NOISING`); another one is refused before training (:meth:`ValidationLoss.unsupported`).

SDXL (``text_encoder_2`` given) is conditioned as diffusers' ``train_dreambooth_lora_sdxl.py`` conditions it:
both encoders' penultimate hidden states side by side, the second encoder's pooled projection as
``text_embeds``, and ``time_ids`` = original size (h, w) of the image before resizing + top-left of the
centre crop (y, x) + target size (resolution, resolution).

Flow-matching families (SD3, Flux; the noise scheduler a ``FlowMatchEulerDiscreteScheduler``) are scored as
diffusers' ``train_dreambooth_lora_sd3.py``/``_flux.py`` train them, at fixed sigmas instead of sampled ones
(``sigmas``, default 1.0/0.75/0.5/0.25 as ai-toolkit): ``x = (1 - sigma) latents + sigma noise``, the
transformer's prediction against the velocity ``noise - latents``, conditioned by the pipeline's own
``encode_prompt``. Each sigma is first moved by the scheduler's timestep shift as its sampler moves it at
this resolution (:func:`shifted_sigma`), so ``sigma0.5`` is the point halfway through a sampling run.
Flux's latents are packed into 2x2 tokens with their image ids, its timestep is ``sigma`` and its distilled
guidance ``guidance`` (3.5, diffusers' script default) where the transformer embeds one. Logged as
``val/val_loss/sigma<s>``. SD3's ``--precondition_outputs`` (EDM-style x0 target) is not modelled.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps

from sdcallbacks.config.loading import ConfigError, read_text
from sdcallbacks.config.metrics import ValLossConfig
from sdcallbacks.metrics.images import UNREADABLE, image_files
from sdcallbacks.sampling.encoders import loaded_on
from sdcallbacks.sampling.families import Family, resolve_family
from sdcallbacks.sampling.modes import eval_mode
from sdcallbacks.sampling.modules import TrainingModules, unwrap
from sdcallbacks.sampling.pipeline import build_pipeline
from sdcallbacks.sampling.rng import isolated_rng, seeded_generator
from sdcallbacks.sampling.sampler import autocast_for

logger = logging.getLogger("sdcallbacks")

METADATA = "metadata.jsonl"  # diffusers' imagefolder captions
# Noise schedulers whose add_noise is DDPM's forward process, sqrt(abar_t) x0 + sqrt(1 - abar_t) noise (DDPM's
# own and those that copy it), which is what the UNet was trained to undo at timestep t.
DDPM_NOISING = frozenset(
    {
        "DDPMScheduler",
        "DDIMScheduler",
        "PNDMScheduler",
        "DDPMParallelScheduler",
        "DDIMParallelScheduler",
        "LCMScheduler",
        "TCDScheduler",
        "SASolverScheduler",
        "UnCLIPScheduler",
    }
)
# Flow-matching noise schedulers: x_sigma = (1 - sigma) x0 + sigma noise; the target is noise - x0.
FLOW_NOISING = frozenset({"FlowMatchEulerDiscreteScheduler"})


def to_pixels(image: Image.Image, resolution: int) -> torch.Tensor:
    """(3, r, r) in [-1, 1] with the transforms of diffusers' DreamBooth scripts (bilinear short side to r,
    centre crop, normalise by 0.5)."""
    return prepared(image, resolution)[0]


def prepared(image: Image.Image, resolution: int) -> tuple[torch.Tensor, tuple[int, ...]]:
    """:func:`to_pixels` and the image's SDXL ``time_ids``: (original h, w) + (crop top, left) + (r, r),
    the crop's corner computed as the SDXL DreamBooth script does, on the resized image."""
    from torchvision import transforms

    original = (image.height, image.width)
    resized = transforms.Resize(resolution, interpolation=transforms.InterpolationMode.BILINEAR)(image)
    top = max(0, round((resized.height - resolution) / 2.0))
    left = max(0, round((resized.width - resolution) / 2.0))
    finish = transforms.Compose(
        [transforms.CenterCrop(resolution), transforms.ToTensor(), transforms.Normalize([0.5], [0.5])]
    )
    return finish(resized), (*original, top, left, resolution, resolution)


def sdxl_conditioning(
    modules: TrainingModules, captions: list[str], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """(prompt embeddings, pooled embeddings) as the SDXL DreamBooth script's ``encode_prompt``."""
    hidden, pooled = [], None
    for tokenizer, encoder in (
        (modules.tokenizer, modules.text_encoder),
        (modules.tokenizer_2, modules.text_encoder_2),
    ):
        ids = tokenizer(
            captions,
            padding="max_length",
            truncation=True,
            max_length=tokenizer.model_max_length,
            return_tensors="pt",
        ).input_ids
        out = unwrap(encoder)(ids.to(device), output_hidden_states=True, return_dict=False)
        pooled = out[0]  # the last encoder's: its pooled projection
        hidden.append(out[-1][-2])
    return torch.cat(hidden, dim=-1), pooled


def load_training_image(path: Path) -> Image.Image:
    """An image as diffusers' DreamBooth scripts load one: EXIF orientation applied, then RGB."""
    with Image.open(path) as opened:
        image = ImageOps.exif_transpose(opened)
        return image.convert("RGB") if image.mode != "RGB" else image.copy()


def read_imagefolder_captions(folder: Path) -> dict[str, str]:
    """``file_name`` -> ``text`` from ``folder/metadata.jsonl`` (empty when there is none); a bad line is a
    located error."""
    path = folder / METADATA
    if not path.is_file():
        return {}
    captions = {}
    for number, line in enumerate(read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            captions[Path(row["file_name"]).as_posix()] = str(row["text"])
        except (json.JSONDecodeError, KeyError, TypeError):
            raise ConfigError(
                path, [f"line {number}: expected a JSON object with 'file_name' and 'text'"]
            ) from None
    return captions


class ValidationLoss:
    name = "val_loss"

    def __init__(self, config: ValLossConfig):
        self.config = config
        self._data: tuple[list[Image.Image], list[str]] | None = None
        self.skipped: dict[Path, str] = {}  # held-out images left out, and why

    def output_keys(self) -> list[str]:
        """``val_loss`` (the mean over all points) and one key per point: ``val_loss/t<t>`` per timestep of
        a UNet family, ``val_loss/sigma<s>`` per sigma of a flow-matching one (both listed: the family is
        known only once the modules are)."""
        points = [f"t{t}" for t in self.config.timesteps] + [f"sigma{s:g}" for s in self.config.sigmas]
        return [self.name, *(f"{self.name}/{point}" for point in points)]

    def data(self) -> tuple[list[Image.Image], list[str]]:
        """The held-out images with their captions (read once); uncaptioned or unreadable ones are skipped,
        counted in :attr:`skipped` and named in one warning."""
        if self._data is None:
            root = Path(self.config.data).expanduser()
            metadata = read_imagefolder_captions(root)
            images, captions, self.skipped = [], [], {}
            for path in image_files(root, "val_loss data"):
                caption = metadata.get(path.relative_to(root).as_posix())
                if caption is None and path.with_suffix(".txt").is_file():
                    caption = read_text(path.with_suffix(".txt")).strip()
                if caption is None:
                    self.skipped[path] = f"no caption ({METADATA} entry or {path.with_suffix('.txt').name})"
                    continue
                try:
                    images.append(load_training_image(path))
                except UNREADABLE as err:
                    self.skipped[path] = f"unreadable ({type(err).__name__}: {err})"
                    continue
                captions.append(caption)
            if self.skipped:
                logger.warning(
                    "sdcallbacks: val_loss: %d of %d held-out images skipped: %s",
                    len(self.skipped),
                    len(self.skipped) + len(images),
                    "; ".join(f"{p.name}: {why}" for p, why in self.skipped.items()),
                )
            if not images:
                raise ValueError(f"val_loss: no captioned, readable image in {root}")
            self._data = (images, captions)
        return self._data

    def unsupported(self, modules: TrainingModules, family: Family | None = None) -> str | None:
        """Why this loss cannot be computed for ``modules`` (a config problem, raised before training), or
        None."""
        family = family or resolve_family(modules)
        kind = type(modules.noise_scheduler).__name__
        if family.flow_matching:
            if kind in FLOW_NOISING:
                return None
            return (
                f"metrics.val_loss: {family.name} is flow-matching but the noise scheduler is a {kind}; "
                f"val_loss noises along the sigmas of a {' or '.join(sorted(FLOW_NOISING))}"
            )
        if kind in DDPM_NOISING:
            return None
        return (
            f"metrics.val_loss: the noise scheduler is a {kind}; val_loss noises as DDPM does (DDPMScheduler "
            "and the schedulers that copy its add_noise) and does not model Euler/EDM sigmas or flow "
            "matching. Remove metrics.val_loss, or train with a DDPMScheduler."
        )

    def evaluate(
        self, modules: TrainingModules, device: torch.device | str | None = None, mixed_precision: str = "no"
    ) -> dict[str, float]:
        family = resolve_family(modules)
        denoiser, vae = unwrap(modules.denoiser), unwrap(modules.vae)
        device = torch.device(device) if device is not None else next(denoiser.parameters()).device
        if not family.flow_matching:
            top = modules.noise_scheduler.config.num_train_timesteps
            if max(self.config.timesteps) >= top:
                raise ValueError(
                    f"val_loss.timesteps must be below num_train_timesteps={top}; got {self.config.timesteps}"
                )
        images, captions = self.data()
        losses: dict[str, list[float]] = {}
        with (
            isolated_rng(),
            eval_mode(*modules.torch_modules()),
            torch.no_grad(),
            autocast_for(device, mixed_precision),
            loaded_on(modules, device),
        ):
            for start in range(0, len(images), self.config.batch_size):
                stop = start + self.config.batch_size
                batch = [prepared(im, self.config.resolution) for im in images[start:stop]]
                pixels = torch.stack([pixels for pixels, _ in batch])
                latents = vae.encode(pixels.to(device, vae.dtype)).latent_dist.mean
                latents = (
                    latents - (getattr(vae.config, "shift_factor", None) or 0.0)
                ) * vae.config.scaling_factor
                noise = torch.stack(
                    [
                        torch.randn(latents.shape[1:], generator=seeded_generator(self.config.seed + i))
                        for i in range(start, start + len(latents))
                    ]
                ).to(device, latents.dtype)
                if family.flow_matching:
                    per_point = self._flow_losses(modules, family, latents, noise, captions[start:stop])
                else:
                    time_ids = [ids for _, ids in batch]
                    per_point = self._ddpm_losses(modules, latents, noise, captions[start:stop], time_ids)
                for key, per_image in per_point.items():
                    losses.setdefault(key, []).extend(per_image.tolist())
        out = {f"{self.name}/{key}": float(np.mean(v)) for key, v in losses.items()}
        out[self.name] = float(np.mean([v for values in losses.values() for v in values]))
        return out

    def _ddpm_losses(
        self,
        modules: TrainingModules,
        latents: torch.Tensor,
        noise: torch.Tensor,
        captions: list[str],
        time_ids: list[tuple[int, ...]],
    ) -> dict[str, torch.Tensor]:
        """Per-image MSE of the UNet at each of ``timesteps`` (keys ``t<t>``)."""
        scheduler, unet, device = modules.noise_scheduler, unwrap(modules.unet), latents.device
        added = None
        if modules.text_encoder_2 is not None:  # SDXL
            context, pooled = sdxl_conditioning(modules, captions, device)
            added = {
                "text_embeds": pooled,
                "time_ids": torch.tensor(time_ids, device=device, dtype=context.dtype),
            }
        else:
            ids = modules.tokenizer(
                captions,
                padding="max_length",
                truncation=True,
                max_length=modules.tokenizer.model_max_length,
                return_tensors="pt",
            ).input_ids
            context = unwrap(modules.text_encoder)(ids.to(device))[0]
        out = {}
        for t in self.config.timesteps:
            steps = torch.full((len(latents),), t, dtype=torch.long, device=device)
            noisy = scheduler.add_noise(latents, noise, steps)
            target = (
                scheduler.get_velocity(latents, noise, steps)
                if scheduler.config.prediction_type == "v_prediction"
                else latents
                if scheduler.config.prediction_type == "sample"
                else noise
            )
            prediction = unet(noisy, steps, context, added_cond_kwargs=added).sample
            out[f"t{t}"] = (prediction.float() - target.float()).pow(2).flatten(1).mean(dim=1)
        return out

    def _flow_losses(
        self,
        modules: TrainingModules,
        family: Family,
        latents: torch.Tensor,
        noise: torch.Tensor,
        captions: list[str],
    ) -> dict[str, torch.Tensor]:
        """Per-image MSE of the transformer's velocity (``noise - latents``) at each of ``sigmas`` after the
        scheduler's shift (keys ``sigma<s>``), conditioned as the family's pipeline conditions it."""
        pipe = build_pipeline(modules, "training")  # the family's own encode_prompt and latent packing
        transformer, device = unwrap(modules.transformer), latents.device
        batch, channels, height, width = latents.shape
        patch = family.patch(modules)
        length = family.max_sequence_length
        if family.name == "sd3":
            embeds, _, pooled, _ = pipe.encode_prompt(
                captions,
                None,
                None,
                device=device,
                do_classifier_free_guidance=False,
                max_sequence_length=length,
            )
        else:
            embeds, pooled, text_ids = pipe.encode_prompt(
                captions, None, device=device, max_sequence_length=length
            )
            image_ids = pipe._prepare_latent_image_ids(batch, height // 2, width // 2, device, embeds.dtype)
            guidance = None
            if transformer.config.guidance_embeds:
                guidance = torch.full((batch,), self.config.guidance, device=device)
        out = {}
        tokens = (height // patch) * (width // patch)
        for s in self.config.sigmas:
            sigma = shifted_sigma(modules.noise_scheduler, s, tokens)
            noisy = (1.0 - sigma) * latents + sigma * noise
            timestep = torch.full(
                (batch,), sigma * modules.noise_scheduler.config.num_train_timesteps, device=device
            )
            if family.name == "sd3":
                prediction = transformer(
                    hidden_states=noisy,
                    timestep=timestep,
                    encoder_hidden_states=embeds,
                    pooled_projections=pooled,
                    return_dict=False,
                )[0]
            else:  # Flux reads 2x2 patches of the latents as tokens, and its timestep in [0, 1]
                packed = pipe._pack_latents(noisy, batch, channels, height, width)
                prediction = transformer(
                    hidden_states=packed,
                    timestep=timestep / 1000,
                    guidance=guidance,
                    pooled_projections=pooled,
                    encoder_hidden_states=embeds,
                    txt_ids=text_ids,
                    img_ids=image_ids,
                    return_dict=False,
                )[0]
                scale = pipe.vae_scale_factor
                prediction = pipe._unpack_latents(prediction, height * scale, width * scale, scale)
            target = noise - latents
            out[f"sigma{s:g}"] = (prediction.float() - target.float()).pow(2).flatten(1).mean(dim=1)
        return out


def shifted_sigma(scheduler: Any, sigma: float, tokens: int) -> float:
    """``sigma`` moved by the scheduler's timestep shift, as its sampler moves it at this resolution: the
    resolution-dependent ``mu`` of ``use_dynamic_shifting`` (Flux, over ``tokens`` latent tokens), else the
    static ``shift`` (SD3's 3.0), ``shift * s / (1 + (shift - 1) * s)``."""
    config = scheduler.config
    if config.get("use_dynamic_shifting"):
        from diffusers.pipelines.flux.pipeline_flux import calculate_shift

        mu = calculate_shift(
            tokens, config.base_image_seq_len, config.max_image_seq_len, config.base_shift, config.max_shift
        )
        return float(scheduler.time_shift(mu, 1.0, torch.tensor(sigma, dtype=torch.float64)))
    shift = config.shift
    return shift * sigma / (1 + (shift - 1) * sigma)
