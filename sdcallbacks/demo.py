"""``sdcallbacks demo``: a LoRA learns a new colour on the tiny world, with the callback watching.

A real accelerate + peft training loop, read top to bottom: the tiny base model draws red, green and blue
squares; the LoRA is trained on yellow squares. Every ``validate_every`` steps the callback samples the
validation prompts, scores them with the WD14-format tagger (``tag_accuracy``), logs to W&B (offline),
writes grids and ``metrics.jsonl``, and keeps the best LoRA. The demo checks that the best validation's
tag accuracy beats the step-0 baseline (LoRA disabled) by at least ``min_gain``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from sdcallbacks.callback import ValidationCallback
from sdcallbacks.config import (
    CheckpointConfig,
    ClipModelConfig,
    MetricsConfig,
    PromptDefaults,
    PromptEntry,
    RunConfig,
    SamplingConfig,
    ScheduleConfig,
    TagAccuracyConfig,
)
from sdcallbacks.config.metrics import AestheticLaionConfig, ClipScoreConfig, DiversityClipConfig
from sdcallbacks.outputs.writer import read_metrics
from sdcallbacks.testing.world import TinyWorld, build_tiny_world

MONITOR = "val/tag_accuracy/mean"


@dataclass
class DemoResult:
    output_dir: Path
    baseline_score: float
    best_score: float
    best_step: int
    best_model_path: str | None
    metrics_path: Path
    samples_dir: Path
    wandb_dir: Path | None
    steps: int

    @property
    def gain(self) -> float:
        return self.best_score - self.baseline_score


def demo_config(world: TinyWorld, output_dir: Path, validate_every: int, save_top_k: int = 1) -> RunConfig:
    """The callback's configuration; the demo writes it to ``<output_dir>/config.yaml`` as well.
    ``save_top_k=-1`` keeps every validation's checkpoint (for ``sdcallbacks evaluate``)."""
    clip = ClipModelConfig(model=f"local-dir:{world.clip_dir}", pretrained=None)
    return RunConfig(
        output_dir=output_dir,
        overwrite_output_dir=True,  # running the demo again replaces its previous outputs
        seed=1234,
        prompts=[
            PromptEntry(name="yellow_on_white", prompt="yellow square, white background"),
            PromptEntry(name="yellow", prompt="yellow square"),
        ],
        defaults=PromptDefaults(num_images=4, width=32, height=32, steps=20, guidance_scale=4.0),
        sampling=SamplingConfig(scheduler="auto", batch_size=8, baseline=True),
        schedule=ScheduleConfig(every_n_steps=validate_every, validate_at_end=True),
        # One CLIP backbone serves clip_score, aesthetic_laion and diversity_clip: it runs once per image.
        metrics=MetricsConfig(
            tag_accuracy=TagAccuracyConfig(model=str(world.tagger_dir)),
            clip_score=ClipScoreConfig(clip=clip),
            aesthetic_laion=AestheticLaionConfig(head=str(world.laion_head_path), clip=clip),
            diversity_clip=DiversityClipConfig(clip=clip),
        ),
        monitor=MONITOR,
        mode="max",
        checkpoint=CheckpointConfig(save_top_k=save_top_k),
    )


def _load_concept(world: TinyWorld, tokenizer) -> tuple[torch.Tensor, torch.Tensor]:
    from PIL import Image

    from sdcallbacks.testing.shapes import to_tensor

    pairs = world.concept_samples()
    pixels = to_tensor([Image.open(path).convert("RGB") for path, _ in pairs])
    ids = tokenizer(
        [caption for _, caption in pairs],
        padding="max_length",
        max_length=tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    ).input_ids
    return pixels, ids


def run_demo(
    output_dir: Path | str = "sdcallbacks_demo",
    max_steps: int = 600,
    validate_every: int = 100,
    learning_rate: float = 5e-3,
    batch_size: int = 8,
    cache_dir: Path | str | None = None,
    report_to: str | None = "wandb",
    progress_bar: bool = False,
    save_top_k: int = 1,
) -> DemoResult:
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from peft import LoraConfig
    from transformers import CLIPTextModel, CLIPTokenizer

    output_dir = Path(output_dir).resolve()
    output_dir.mkdir(parents=True, exist_ok=True)
    world = build_tiny_world(cache_dir)

    # 1. Accelerator and trackers. W&B runs offline: nothing leaves the machine (`wandb sync` uploads later).
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_SILENT", "true")
    accelerator = Accelerator(log_with=report_to, project_dir=str(output_dir))
    set_seed(0)
    if report_to:
        accelerator.init_trackers(
            "sdcallbacks-demo",
            config={"max_steps": max_steps, "lr": learning_rate},
            init_kwargs={"wandb": {"dir": str(output_dir)}},
        )

    # 2. The base model, loaded from the tiny world's pipeline folder; only the LoRA trains.
    base = world.pipeline_dir
    tokenizer = CLIPTokenizer.from_pretrained(base, subfolder="tokenizer")
    text_encoder = CLIPTextModel.from_pretrained(base, subfolder="text_encoder")
    vae = AutoencoderKL.from_pretrained(base, subfolder="vae")
    unet = UNet2DConditionModel.from_pretrained(base, subfolder="unet")
    noise_scheduler = DDPMScheduler.from_pretrained(base, subfolder="scheduler")
    for module in (unet, vae, text_encoder):
        module.requires_grad_(False)
    unet.add_adapter(
        LoraConfig(
            r=8,
            lora_alpha=8,
            init_lora_weights="gaussian",
            lora_dropout=0.1,
            target_modules=["to_q", "to_k", "to_v", "to_out.0"],
        )
    )
    lora_params = [p for p in unet.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(lora_params, lr=learning_rate)
    unet, optimizer = accelerator.prepare(unet, optimizer)
    vae.to(accelerator.device)
    text_encoder.to(accelerator.device)

    # 3. The concept: latents and text embeddings are fixed, so compute them once.
    pixels, ids = _load_concept(world, tokenizer)
    with torch.no_grad():
        latents = vae.encode(pixels.to(accelerator.device)).latent_dist.mean * vae.config.scaling_factor
        hidden = text_encoder(ids.to(accelerator.device))[0]

    # 4. The callback: these are the lines a user adds to their own loop.
    config = demo_config(world, output_dir, validate_every, save_top_k)
    (output_dir / "config.yaml").write_text(_yaml(config), encoding="utf-8")
    callback = ValidationCallback(config, accelerator=accelerator)
    callback.on_train_start(
        unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, noise_scheduler=noise_scheduler
    )

    # 5. The training loop.
    generator = torch.Generator().manual_seed(0)
    global_step = 0
    unet.train()
    bar = tqdm(total=max_steps, desc="training", unit="step", disable=not progress_bar, dynamic_ncols=True)
    with bar, logging_redirect_tqdm():  # the callback's log lines print above the bar
        while global_step < max_steps:
            index = torch.randint(0, len(latents), (batch_size,), generator=generator)
            noise = torch.randn(latents[index].shape, generator=generator).to(latents.device)
            timesteps = torch.randint(
                0, noise_scheduler.config.num_train_timesteps, (batch_size,), generator=generator
            )
            noisy = noise_scheduler.add_noise(latents[index], noise, timesteps.to(latents.device))
            with accelerator.accumulate(unet):
                prediction = unet(noisy, timesteps.to(latents.device), hidden[index]).sample
                loss = F.mse_loss(prediction.float(), noise.float())
                accelerator.backward(loss)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            if accelerator.sync_gradients:
                global_step += 1
                accelerator.log({"train/loss": loss.item()}, step=global_step)
                control = callback.on_step_end(global_step)
                bar.update(1)
                bar.set_postfix(loss=f"{loss.item():.4f}", **_last_validation(callback), refresh=False)
                if control.should_stop:
                    break
    callback.on_train_end(global_step)
    wandb_dir = _wandb_run_dir(accelerator)
    accelerator.end_training()

    baseline = _baseline_score(callback)
    return DemoResult(
        output_dir=output_dir,
        baseline_score=baseline,
        best_score=callback.best_model_score if callback.best_model_score is not None else float("nan"),
        best_step=callback.best_step if callback.best_step is not None else -1,
        best_model_path=callback.best_model_path,
        metrics_path=callback.writer.metrics_path,
        samples_dir=callback.writer.samples_dir,
        wandb_dir=wandb_dir,
        steps=global_step,
    )


def _last_validation(callback: ValidationCallback) -> dict[str, str]:
    """The last validation's monitored value and step, for the progress bar."""
    if not callback.selection.monitored:
        return {}
    step, value = callback.selection.monitored[-1]
    return {"tag_accuracy": f"{value:.3f}@{step}"}


def _baseline_score(callback: ValidationCallback) -> float:
    """The monitored value of the baseline validation, as ``metrics.jsonl`` recorded it."""
    for row in read_metrics(callback.writer.metrics_path):
        if row["type"] == "aggregate" and row.get("baseline") and MONITOR in row["values"]:
            return row["values"][MONITOR]
    return float("nan")


def _wandb_run_dir(accelerator) -> Path | None:
    for tracker in accelerator.trackers:
        if tracker.name == "wandb":
            return Path(tracker.run.dir).parent
    return None


def _yaml(config: RunConfig) -> str:
    import yaml

    return yaml.safe_dump(json.loads(config.model_dump_json()), sort_keys=False)
