"""``val_loss``: the denoising loss on held-out images at fixed timesteps with fixed noise.

No sampling: per held-out image (with its same-stem ``.txt`` caption), the VAE latent (distribution mean,
times the VAE's scaling factor) is noised at each configured timestep (kohya's 200/400/600/800 of 1000 by
default) with noise drawn once from a per-image seed, and the UNet's prediction is compared with its target
(the noise, or the velocity for v-prediction) by mean squared error. Same images, same noise, same
timesteps every time, so the curve moves only with the weights. Logged as ``val/val_loss`` (mean over
timesteps and images) and ``val/val_loss/t<t>``.

It runs with the sampler's protections: every global random stream restored, every submodule in eval mode
and restored after, no gradients, autocast matching ``mixed_precision``, the training scheduler untouched
(``add_noise`` and ``get_velocity`` read it without changing it). SD 1.x/2.x UNets only: SDXL's UNet needs
size and pooled-text conditioning that this loss does not build yet.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from PIL import Image

from sdcallbacks.config.loading import read_text
from sdcallbacks.config.metrics import ValLossConfig
from sdcallbacks.metrics.images import ImageFolder
from sdcallbacks.sampling.modes import eval_mode
from sdcallbacks.sampling.pipeline import TrainingModules, unwrap
from sdcallbacks.sampling.rng import isolated_rng
from sdcallbacks.sampling.sampler import autocast_for

logger = logging.getLogger("sdcallbacks")


def to_pixels(image: Image.Image, resolution: int) -> torch.Tensor:
    """(3, r, r) in [-1, 1]: short side to r (bicubic), centre crop, as the diffusers train scripts."""
    w, h = image.size
    scale = resolution / min(w, h)
    image = image.resize(
        (max(resolution, round(w * scale)), max(resolution, round(h * scale))), Image.BICUBIC
    )
    left, top = (image.width - resolution) // 2, (image.height - resolution) // 2
    image = image.crop((left, top, left + resolution, top + resolution))
    return torch.from_numpy(np.asarray(image, dtype=np.float32) / 127.5 - 1.0).permute(2, 0, 1)


class ValidationLoss:
    name = "val_loss"

    def __init__(self, config: ValLossConfig):
        self.config = config
        self._data: tuple[list[Image.Image], list[str]] | None = None

    def output_keys(self) -> list[str]:
        """``val_loss`` (the mean over all timesteps) and ``val_loss/t<t>`` per timestep."""
        return [self.name, *(f"{self.name}/t{t}" for t in self.config.timesteps)]

    def data(self) -> tuple[list[Image.Image], list[str]]:
        if self._data is None:
            folder = ImageFolder.read(self.config.data, what="val_loss data")
            captions = []
            for path in folder.paths:
                caption = path.with_suffix(".txt")
                if not caption.is_file():
                    logger.warning(
                        "sdcallbacks: val_loss: %s has no caption file %s; using ''", path, caption.name
                    )
                captions.append(read_text(caption).strip() if caption.is_file() else "")
            self._data = (folder.images, captions)
        return self._data

    def evaluate(
        self, modules: TrainingModules, device: torch.device | str | None = None, mixed_precision: str = "no"
    ) -> dict[str, float]:
        if modules.text_encoder_2 is not None:
            raise NotImplementedError(
                "val_loss supports SD 1.x/2.x UNets; SDXL conditioning is not built yet"
            )
        unet, vae, text_encoder = unwrap(modules.unet), unwrap(modules.vae), unwrap(modules.text_encoder)
        device = torch.device(device) if device is not None else next(unet.parameters()).device
        scheduler = modules.noise_scheduler
        timesteps = self.config.timesteps
        top = scheduler.config.num_train_timesteps
        if max(timesteps) >= top:
            raise ValueError(f"val_loss.timesteps must be below num_train_timesteps={top}; got {timesteps}")
        images, captions = self.data()
        losses = {t: [] for t in timesteps}
        with (
            isolated_rng(),
            eval_mode(unet, vae, text_encoder),
            torch.no_grad(),
            autocast_for(device, mixed_precision),
        ):
            for start in range(0, len(images), self.config.batch_size):
                stop = start + self.config.batch_size
                pixels = torch.stack([to_pixels(im, self.config.resolution) for im in images[start:stop]])
                latents = vae.encode(pixels.to(device, vae.dtype)).latent_dist.mean
                latents = (
                    latents - (getattr(vae.config, "shift_factor", None) or 0.0)
                ) * vae.config.scaling_factor
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
                    prediction = unet(noisy, steps, context).sample
                    per_image = (prediction.float() - target.float()).pow(2).flatten(1).mean(dim=1)
                    losses[t].extend(per_image.tolist())
        out = {f"{self.name}/t{t}": float(np.mean(v)) for t, v in losses.items()}
        out[self.name] = float(np.mean([v for values in losses.values() for v in values]))
        return out
