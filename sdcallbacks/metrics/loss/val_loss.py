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
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from sdcallbacks.config.loading import ConfigError, read_text
from sdcallbacks.config.metrics import ValLossConfig
from sdcallbacks.metrics.images import UNREADABLE, image_files
from sdcallbacks.sampling.modes import eval_mode
from sdcallbacks.sampling.pipeline import TrainingModules, unwrap
from sdcallbacks.sampling.rng import isolated_rng
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
        """``val_loss`` (the mean over all timesteps) and ``val_loss/t<t>`` per timestep."""
        return [self.name, *(f"{self.name}/t{t}" for t in self.config.timesteps)]

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

    def unsupported(self, modules: TrainingModules) -> str | None:
        """Why this loss cannot be computed for ``modules`` (a config problem, raised before training), or
        None."""
        kind = type(modules.noise_scheduler).__name__
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
        unet, vae, text_encoder = unwrap(modules.unet), unwrap(modules.vae), unwrap(modules.text_encoder)
        device = torch.device(device) if device is not None else next(unet.parameters()).device
        scheduler = modules.noise_scheduler
        timesteps = self.config.timesteps
        top = scheduler.config.num_train_timesteps
        if max(timesteps) >= top:
            raise ValueError(f"val_loss.timesteps must be below num_train_timesteps={top}; got {timesteps}")
        images, captions = self.data()
        losses = {t: [] for t in timesteps}
        encoders = [m for m in (text_encoder, unwrap(modules.text_encoder_2)) if m is not None]
        with (
            isolated_rng(),
            eval_mode(unet, vae, *encoders),
            torch.no_grad(),
            autocast_for(device, mixed_precision),
        ):
            for start in range(0, len(images), self.config.batch_size):
                stop = start + self.config.batch_size
                batch = [prepared(im, self.config.resolution) for im in images[start:stop]]
                pixels = torch.stack([pixels for pixels, _ in batch])
                latents = vae.encode(pixels.to(device, vae.dtype)).latent_dist.mean
                latents = (
                    latents - (getattr(vae.config, "shift_factor", None) or 0.0)
                ) * vae.config.scaling_factor
                added = None
                if modules.is_sdxl:
                    context, pooled = sdxl_conditioning(modules, captions[start:stop], device)
                    time_ids = torch.tensor([ids for _, ids in batch], device=device, dtype=context.dtype)
                    added = {"text_embeds": pooled, "time_ids": time_ids}
                else:
                    ids = modules.tokenizer(
                        captions[start:stop],
                        padding="max_length",
                        truncation=True,
                        max_length=modules.tokenizer.model_max_length,
                        return_tensors="pt",
                    ).input_ids
                    context = text_encoder(ids.to(device))[0]
                noise = torch.stack(
                    [
                        torch.randn(
                            latents.shape[1:], generator=torch.Generator().manual_seed(self.config.seed + i)
                        )
                        for i in range(start, start + len(latents))
                    ]
                ).to(device, latents.dtype)
                for t in timesteps:
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
                    per_image = (prediction.float() - target.float()).pow(2).flatten(1).mean(dim=1)
                    losses[t].extend(per_image.tolist())
        out = {f"{self.name}/t{t}": float(np.mean(v)) for t, v in losses.items()}
        out[self.name] = float(np.mean([v for values in losses.values() for v in values]))
        return out
