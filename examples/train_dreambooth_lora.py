#!/usr/bin/env python
"""DreamBooth LoRA fine-tuning of SD 1.x/2.x, SDXL, SD3 or Flux (accelerate + peft), watched by sdcallbacks.

    accelerate launch examples/train_dreambooth_lora.py \\
        --pretrained_model stable-diffusion-v1-5/stable-diffusion-v1-5 \\
        --instance_data_dir data/person --instance_prompt "a photo of sks person" \\
        --callback_config configs/dreambooth_face.yaml --output_dir outputs/person

    python examples/train_dreambooth_lora.py --tiny_world   # offline, on the tiny world, in minutes
    python examples/train_dreambooth_lora.py --tiny_world --family flux --max_train_steps 20  # or sdxl, sd3

``--family sdxl`` trains an SDXL UNet LoRA as diffusers' ``train_dreambooth_lora_sdxl.py`` does: both text
encoders' penultimate hidden states, the second's pooled projection and the size/crop ``time_ids``.
``--family sd3`` and ``--family flux`` train a transformer LoRA by flow matching as
``train_dreambooth_lora_sd3.py``/``_flux.py`` do (uniform sigmas, the velocity ``noise - latents`` as
target; Flux with packed latents and its distilled guidance), conditioned by the pipeline's own
``encode_prompt``.

The five sdcallbacks lines are marked ``# sdcallbacks``: build the callback, hand it the modules, call it
after each optimizer step (and stop when it says so), and tell it when training ends. It validates every
N steps, logs to the accelerator's trackers, keeps the best LoRA in ``<output_dir>/validation/checkpoints``
and, with ``early_stopping.restore_best_at_end``, leaves the best weights in the model that is saved last.
Resume with ``--resume_from_checkpoint latest``: ``accelerator.save_state`` carries the callback's state.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.utils import set_seed
from diffusers import (
    AutoencoderKL,
    DDPMScheduler,
    FlowMatchEulerDiscreteScheduler,
    FluxPipeline,
    FluxTransformer2DModel,
    SD3Transformer2DModel,
    StableDiffusion3Pipeline,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from diffusers.optimization import get_scheduler
from diffusers.training_utils import cast_training_params
from diffusers.utils import convert_state_dict_to_diffusers
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict
from PIL import Image
from torchvision import transforms
from transformers import (
    CLIPTextModel,
    CLIPTextModelWithProjection,
    CLIPTokenizer,
    T5EncoderModel,
    T5TokenizerFast,
)

from sdcallbacks import ValidationCallback
from sdcallbacks.config.loading import read_mapping, validate_config

PIPELINES = {
    "sd15": StableDiffusionPipeline,
    "sdxl": StableDiffusionXLPipeline,
    "sd3": StableDiffusion3Pipeline,
    "flux": FluxPipeline,
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--pretrained_model",
        default="stable-diffusion-v1-5/stable-diffusion-v1-5",
        help="hub id or local diffusers pipeline folder",
    )
    p.add_argument("--family", choices=list(PIPELINES), default="sd15", help="the model family")
    p.add_argument("--guidance_scale", type=float, default=3.5, help="Flux's distilled guidance in training")
    p.add_argument("--instance_data_dir", type=Path, help="training images (+ optional metadata.jsonl)")
    p.add_argument("--instance_prompt", default=None, help="caption of every image without metadata.jsonl")
    p.add_argument("--callback_config", type=Path, default=Path("configs/dreambooth_face.yaml"))
    p.add_argument("--output_dir", type=Path, default=Path("outputs/dreambooth_lora"))
    p.add_argument("--resolution", type=int, default=512)
    p.add_argument("--train_batch_size", type=int, default=1)
    p.add_argument("--gradient_accumulation_steps", type=int, default=1)
    p.add_argument("--learning_rate", type=float, default=1e-4)
    p.add_argument("--lr_scheduler", default="constant")
    p.add_argument("--max_train_steps", type=int, default=1000)
    p.add_argument("--rank", type=int, default=4, help="LoRA rank (alpha = rank)")
    p.add_argument("--mixed_precision", choices=["no", "fp16", "bf16"], default=None)
    p.add_argument("--checkpointing_steps", type=int, default=500)
    p.add_argument("--resume_from_checkpoint", default=None, help='a checkpoint-<step> folder or "latest"')
    p.add_argument("--validate_every", type=int, default=None, help="override the config's every_n_steps")
    p.add_argument("--report_to", default="wandb", help='"wandb", "tensorboard", ... or "none"')
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--tiny_world",
        action="store_true",
        help="train on the offline tiny world (configs/tiny.yaml, 32 px) instead",
    )
    args = p.parse_args(argv)
    if args.tiny_world:
        use_tiny_world(args)
    if args.instance_data_dir is None:
        p.error("--instance_data_dir is required (or --tiny_world)")
    return args


def use_tiny_world(args: argparse.Namespace) -> None:
    """Point every path at the tiny world (built, or taken from the cache) and shrink the run to match."""
    from sdcallbacks.testing.families import family_pipeline
    from sdcallbacks.testing.world import build_tiny_world

    world = build_tiny_world()
    os.environ["SDCALLBACKS_TINY_WORLD"] = str(world.root)  # configs/tiny.yaml refers to it
    os.environ.setdefault("WANDB_MODE", "offline")
    args.pretrained_model = str(family_pipeline(args.family, world))
    args.instance_data_dir = world.concept_dir
    args.callback_config = Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml"
    args.resolution, args.train_batch_size, args.learning_rate, args.rank = 32, 8, 3e-3, 8


class DreamBoothDataset(torch.utils.data.Dataset):
    """Images of the instance, each with its caption: from ``metadata.jsonl`` (``file_name``, ``text``, the
    Hugging Face imagefolder layout) when present, otherwise ``instance_prompt``. Each item carries the
    caption, its token ids for every tokenizer given and SDXL's ``time_ids``: the original size (h, w),
    the crop's top-left corner (y, x) and the target size, as ``train_dreambooth_lora_sdxl.py`` computes
    them."""

    def __init__(self, folder: Path, instance_prompt: str | None, tokenizers: list, resolution: int):
        metadata = folder / "metadata.jsonl"
        if metadata.is_file():
            rows = [json.loads(line) for line in metadata.read_text(encoding="utf-8").splitlines() if line]
            self.items = [(folder / r["file_name"], r["text"]) for r in rows]
        else:
            if instance_prompt is None:
                raise SystemExit(f"{folder} has no metadata.jsonl: pass --instance_prompt")
            suffixes = {".png", ".jpg", ".jpeg", ".webp"}
            self.items = [
                (p, instance_prompt) for p in sorted(folder.iterdir()) if p.suffix.lower() in suffixes
            ]
        if not self.items:
            raise SystemExit(f"no training images in {folder}")
        self.tokenizers = tokenizers
        self.resolution = resolution
        self.resize = transforms.Resize(resolution, interpolation=transforms.InterpolationMode.BILINEAR)
        self.crop = transforms.CenterCrop(resolution)
        self.to_tensor = transforms.Compose([transforms.ToTensor(), transforms.Normalize([0.5], [0.5])])

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        path, caption = self.items[index]
        image = Image.open(path).convert("RGB")
        original_size = (image.height, image.width)
        image = self.resize(image)
        top = max(0, round((image.height - self.resolution) / 2.0))
        left = max(0, round((image.width - self.resolution) / 2.0))
        item = {
            "pixel_values": self.to_tensor(self.crop(image)),
            "time_ids": torch.tensor([*original_size, top, left, self.resolution, self.resolution]),
            "caption": caption,
        }
        for i, tokenizer in enumerate(self.tokenizers):
            item[f"input_ids_{i}"] = tokenizer(
                caption,
                padding="max_length",
                truncation=True,
                max_length=tokenizer.model_max_length,
                return_tensors="pt",
            ).input_ids[0]
        return item


def encode_prompt(text_encoders: list, batch: dict[str, torch.Tensor], dtype: torch.dtype):
    """The UNet's text conditioning: SD 1.x/2.x the last hidden state; SDXL both encoders' penultimate
    hidden states side by side and ``added_cond_kwargs`` (the second encoder's pooled projection and the
    time ids)."""
    if len(text_encoders) == 1:
        return text_encoders[0](batch["input_ids_0"])[0], None
    hidden = []
    for i, encoder in enumerate(text_encoders):
        out = encoder(batch[f"input_ids_{i}"], output_hidden_states=True)
        hidden.append(out.hidden_states[-2])
        pooled = out[0]  # the last encoder's pooled projection
    return torch.cat(hidden, dim=-1), {"text_embeds": pooled, "time_ids": batch["time_ids"].to(dtype)}


def callback_config(args: argparse.Namespace):
    """The callback's YAML, with its outputs under --output_dir and an optional schedule override."""
    data = read_mapping(args.callback_config)
    data["output_dir"] = str(args.output_dir / "validation")
    if args.validate_every:
        data.setdefault("schedule", {})["every_n_steps"] = args.validate_every
    return validate_config(data, args.callback_config)


def load_components(base: str, family: str) -> dict:
    """The base model's components by diffusers' names (a pipeline class accepts them as they are)."""
    parts: dict = {"vae": AutoencoderKL.from_pretrained(base, subfolder="vae")}
    parts["tokenizer"] = CLIPTokenizer.from_pretrained(base, subfolder="tokenizer")
    if family in ("sd15", "sdxl"):
        parts["unet"] = UNet2DConditionModel.from_pretrained(base, subfolder="unet")
        parts["scheduler"] = DDPMScheduler.from_pretrained(base, subfolder="scheduler")
        parts["text_encoder"] = CLIPTextModel.from_pretrained(base, subfolder="text_encoder")
        if family == "sdxl":
            parts["tokenizer_2"] = CLIPTokenizer.from_pretrained(base, subfolder="tokenizer_2")
            parts["text_encoder_2"] = CLIPTextModelWithProjection.from_pretrained(
                base, subfolder="text_encoder_2"
            )
        return parts
    parts["scheduler"] = FlowMatchEulerDiscreteScheduler.from_pretrained(base, subfolder="scheduler")
    if family == "sd3":
        parts["transformer"] = SD3Transformer2DModel.from_pretrained(base, subfolder="transformer")
        for i in ("", "_2"):
            parts[f"text_encoder{i}"] = CLIPTextModelWithProjection.from_pretrained(
                base, subfolder=f"text_encoder{i}"
            )
        parts["tokenizer_2"] = CLIPTokenizer.from_pretrained(base, subfolder="tokenizer_2")
        parts["text_encoder_3"] = T5EncoderModel.from_pretrained(base, subfolder="text_encoder_3")
        parts["tokenizer_3"] = T5TokenizerFast.from_pretrained(base, subfolder="tokenizer_3")
    else:
        parts["transformer"] = FluxTransformer2DModel.from_pretrained(base, subfolder="transformer")
        parts["text_encoder"] = CLIPTextModel.from_pretrained(base, subfolder="text_encoder")
        parts["text_encoder_2"] = T5EncoderModel.from_pretrained(base, subfolder="text_encoder_2")
        parts["tokenizer_2"] = T5TokenizerFast.from_pretrained(base, subfolder="tokenizer_2")
    return parts


def flow_matching_loss(args, parts: dict, denoiser, latents: torch.Tensor, batch: dict) -> torch.Tensor:
    """SD3/Flux: x = (1 - sigma) latents + sigma noise at a uniformly drawn training sigma, the prediction
    against the velocity noise - latents, conditioned by the pipeline's ``encode_prompt``."""
    scheduler = parts["scheduler"]
    noise = torch.randn_like(latents)
    indices = torch.randint(0, scheduler.config.num_train_timesteps, (latents.shape[0],))
    timesteps = scheduler.timesteps[indices].to(latents.device)
    sigmas = scheduler.sigmas[indices].to(latents.device, latents.dtype).view(-1, 1, 1, 1)
    noisy = (1.0 - sigmas) * latents + sigmas * noise
    with torch.no_grad():
        encoder = parts["text_pipeline"]
        if args.family == "sd3":
            embeds, _, pooled, _ = encoder.encode_prompt(
                batch["caption"], None, None, do_classifier_free_guidance=False
            )
        else:
            embeds, pooled, text_ids = encoder.encode_prompt(batch["caption"], None)
    if args.family == "sd3":
        prediction = denoiser(
            hidden_states=noisy, timestep=timesteps, encoder_hidden_states=embeds, pooled_projections=pooled
        ).sample
    else:
        b, c, h, w = latents.shape
        image_ids = FluxPipeline._prepare_latent_image_ids(b, h // 2, w // 2, latents.device, latents.dtype)
        guidance = torch.full((b,), args.guidance_scale, device=latents.device)
        packed = denoiser(
            hidden_states=FluxPipeline._pack_latents(noisy, b, c, h, w),
            timestep=timesteps / 1000,  # Flux reads sigma
            guidance=guidance,
            pooled_projections=pooled,
            encoder_hidden_states=embeds,
            txt_ids=text_ids,
            img_ids=image_ids,
        ).sample
        scale = 2 ** (len(parts["vae"].config.block_out_channels) - 1)
        prediction = FluxPipeline._unpack_latents(packed, h * scale, w * scale, scale)
    return F.mse_loss(prediction.float(), (noise - latents).float())


def main(argv: list[str] | None = None) -> ValidationCallback:
    args = parse_args(argv)
    report_to = None if args.report_to == "none" else args.report_to
    accelerator = Accelerator(
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        mixed_precision=args.mixed_precision,
        log_with=report_to,
        project_dir=str(args.output_dir),
    )
    set_seed(args.seed)
    if report_to:
        accelerator.init_trackers("dreambooth-lora", config={k: str(v) for k, v in vars(args).items()})

    # The base model; only the LoRA layers train. Frozen weights may be half precision, the LoRA stays fp32.
    parts = load_components(args.pretrained_model, args.family)
    denoiser_name = "unet" if args.family in ("sd15", "sdxl") else "transformer"
    denoiser = parts[denoiser_name]
    text_encoders = [parts[k] for k in ("text_encoder", "text_encoder_2", "text_encoder_3") if k in parts]
    tokenizers = [parts[k] for k in ("tokenizer", "tokenizer_2", "tokenizer_3") if k in parts]
    weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(
        accelerator.mixed_precision, torch.float32
    )
    for module in (denoiser, parts["vae"], *text_encoders):
        module.requires_grad_(False)
        module.to(accelerator.device, dtype=weight_dtype)
    denoiser.add_adapter(
        LoraConfig(
            r=args.rank,
            lora_alpha=args.rank,
            init_lora_weights="gaussian",
            target_modules=["to_k", "to_q", "to_v", "to_out.0"],
        )
    )
    cast_training_params(denoiser, dtype=torch.float32)
    vae = parts["vae"]
    if denoiser_name == "transformer":  # the text encoders only: encode_prompt needs nothing else
        text_only = {k: v for k, v in parts.items() if "text_encoder" in k or "tokenizer" in k}
        parts["text_pipeline"] = PIPELINES[args.family](
            **text_only, transformer=None, vae=None, scheduler=None
        )

    dataset = DreamBoothDataset(
        args.instance_data_dir,
        args.instance_prompt,
        tokenizers if denoiser_name == "unet" else [],
        args.resolution,
    )
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=args.train_batch_size, shuffle=True, drop_last=False
    )
    optimizer = torch.optim.AdamW(
        [p for p in denoiser.parameters() if p.requires_grad], lr=args.learning_rate
    )
    lr_scheduler = get_scheduler(
        args.lr_scheduler, optimizer=optimizer, num_training_steps=args.max_train_steps
    )
    denoiser, optimizer, loader, lr_scheduler = accelerator.prepare(denoiser, optimizer, loader, lr_scheduler)
    callback = ValidationCallback.from_config(callback_config(args), accelerator=accelerator)  # sdcallbacks

    global_step = 0
    if args.resume_from_checkpoint:
        path = Path(args.resume_from_checkpoint)
        if args.resume_from_checkpoint == "latest":
            path = max(args.output_dir.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
        accelerator.load_state(str(path))  # also restores the callback's state (it registered itself)
        global_step = int(path.name.split("-")[1])
    steps_per_epoch = math.ceil(len(loader) / args.gradient_accumulation_steps)
    components = {k: v for k, v in parts.items() if k != "text_pipeline"} | {denoiser_name: denoiser}
    callback.on_train_start(
        components=components, global_step=global_step, steps_per_epoch=steps_per_epoch
    )  # sdcallbacks

    denoiser.train()
    stop = global_step >= args.max_train_steps
    while not stop:
        for batch in loader:
            with accelerator.accumulate(denoiser):
                pixels = batch["pixel_values"].to(dtype=weight_dtype)
                latents = vae.encode(pixels).latent_dist.sample()
                latents = (latents - (vae.config.shift_factor or 0.0)) * vae.config.scaling_factor
                if denoiser_name == "transformer":
                    loss = flow_matching_loss(args, parts, denoiser, latents, batch)
                else:
                    noise_scheduler = parts["scheduler"]
                    noise = torch.randn_like(latents)
                    timesteps = torch.randint(
                        0,
                        noise_scheduler.config.num_train_timesteps,
                        (latents.shape[0],),
                        device=latents.device,
                    )
                    noisy = noise_scheduler.add_noise(latents, noise, timesteps)
                    hidden, added = encode_prompt(text_encoders, batch, weight_dtype)
                    prediction = denoiser(noisy, timesteps, hidden, added_cond_kwargs=added).sample
                    loss = F.mse_loss(prediction.float(), noise.float())
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(denoiser.parameters(), 1.0)
                optimizer.step()
                lr_scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            if not accelerator.sync_gradients:
                continue
            global_step += 1
            accelerator.log(
                {"train/loss": loss.item(), "train/lr": lr_scheduler.get_last_lr()[0]}, step=global_step
            )
            control = callback.on_step_end(global_step)  # sdcallbacks: validates when due
            if global_step % args.checkpointing_steps == 0:
                accelerator.save_state(str(args.output_dir / f"checkpoint-{global_step}"))
            stop = control.should_stop or global_step >= args.max_train_steps
            if stop:
                break

    callback.on_train_end(global_step)  # sdcallbacks: last validation; best weights back if configured
    if accelerator.is_main_process:
        lora = get_peft_model_state_dict(accelerator.unwrap_model(denoiser))
        if denoiser_name == "unet":  # diffusers' UNet scripts save diffusers-format keys, SD3/Flux peft's
            lora = convert_state_dict_to_diffusers(lora)
        PIPELINES[args.family].save_lora_weights(
            args.output_dir, **{f"{denoiser_name}_lora_layers": lora}, safe_serialization=True
        )
        print(
            f"LoRA saved to {args.output_dir}; best step {callback.best_step} "
            f"({callback.config.monitor} = {callback.best_model_score}) at {callback.best_model_path}; "
            f"stopping reason: {callback.stopping_reason}"
        )
    accelerator.end_training()
    return callback


if __name__ == "__main__":
    main()
