"""Sampling one validation per model family against the same pipeline called directly (target: at most
1.05x the floor), and the peak memory a validation adds to training.

The floor is diffusers' own pipeline, built once by hand over the same live modules, called with the same
prompts, sizes, steps and per-image generators: what a validation cannot avoid. The validation is
``ValidationSampler.sample`` (RNG isolation, eval-mode switch and restore, a fresh scheduler, a pipeline
assembled per call). Floor and sampler run alternately, 5 pairs; the figure is the median of the per-pair
ratios. Memory: the process's peak RSS (``ru_maxrss``) after a training-shaped forward/backward alone, then
after a validation. Tiny random-weight modules of each family (``sdcallbacks.testing.modules``), 8 images
of 64 px in 2 prompts, 8 steps, classifier-free guidance (Flux: its distilled guidance, one pass).
Run: ``python bench/bench_families.py``.
"""

from __future__ import annotations

import resource
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import interleaved, machine

from sdcallbacks.config import PromptDefaults, PromptEntry
from sdcallbacks.prompts import expand_jobs, resolve_prompts
from sdcallbacks.sampling import ValidationSampler, build_pipeline
from sdcallbacks.sampling.modules import TrainingModules
from sdcallbacks.testing.modules import (
    tiny_flux_modules,
    tiny_lora_modules,
    tiny_sd3_modules,
    tiny_sdxl_modules,
)
from sdcallbacks.testing.tokenizer import build_clip_tokenizer, build_t5_tokenizer

BATCH = 4


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def training_step(family: str, modules: TrainingModules) -> None:
    """A forward and backward of the denoiser on a batch of 64 px latents, as a training step makes."""
    denoiser = modules.denoiser
    latents = torch.randn(BATCH, 4, 32, 32)
    if family == "flux":
        packed = latents.view(BATCH, 4, 16, 2, 16, 2).permute(0, 2, 4, 1, 3, 5).reshape(BATCH, 256, 16)
        out = denoiser(
            hidden_states=packed,
            timestep=torch.full((BATCH,), 0.5),
            guidance=torch.full((BATCH,), 3.5),
            pooled_projections=torch.randn(BATCH, 32),
            encoder_hidden_states=torch.randn(BATCH, 64, 64),
            txt_ids=torch.zeros(64, 3),
            img_ids=torch.zeros(256, 3),
        ).sample
    elif family == "sd3":
        out = denoiser(
            hidden_states=latents,
            timestep=torch.full((BATCH,), 500.0),
            encoder_hidden_states=torch.randn(BATCH, 64, 64),
            pooled_projections=torch.randn(BATCH, 64),
        ).sample
    else:
        added = None
        if family == "sdxl":
            added = {
                "text_embeds": torch.randn(BATCH, 32),
                "time_ids": torch.tensor([[64, 64, 0, 0, 64, 64]] * BATCH),
            }
        context = torch.randn(BATCH, 77, denoiser.config.cross_attention_dim)
        out = denoiser(latents, torch.full((BATCH,), 500), context, added_cond_kwargs=added).sample
    out.pow(2).mean().backward()
    denoiser.zero_grad(set_to_none=True)


def floor_call(pipe, jobs) -> None:
    """The pipeline called by hand: the same prompts, sizes, steps and per-image generators."""
    prompt = jobs[0].prompt
    with torch.no_grad():
        for start in range(0, len(jobs), BATCH):
            chunk = jobs[start : start + BATCH]
            pipe(
                prompt=[job.prompt.prompt for job in chunk],
                width=prompt.width,
                height=prompt.height,
                num_inference_steps=prompt.steps,
                guidance_scale=prompt.guidance_scale,
                generator=[torch.Generator().manual_seed(job.seed) for job in chunk],
                output_type="pil",
            )


def measure(family: str) -> None:
    """One family, in a process of its own (peak RSS is per process)."""
    defaults = PromptDefaults(num_images=4, width=64, height=64, steps=8, guidance_scale=3.0)
    entries = [PromptEntry(prompt="red square, white background"), PromptEntry(prompt="blue square")]
    jobs = expand_jobs(resolve_prompts(entries, defaults, 0))
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = build_clip_tokenizer(Path(tmp) / "clip")
        t5 = build_t5_tokenizer(Path(tmp) / "t5")
    if family in ("sd3", "flux"):
        modules = {"sd3": tiny_sd3_modules, "flux": tiny_flux_modules}[family](tokenizer, t5)
    else:
        modules = {"sd": tiny_lora_modules, "sdxl": tiny_sdxl_modules}[family](tokenizer)
    training_step(family, modules)
    training_rss = peak_rss_mb()
    sampler = ValidationSampler(modules, batch_size=BATCH)
    for module in modules.torch_modules():
        module.eval()  # the floor samples in eval mode too, as the sampler does
    pipe = build_pipeline(modules, "auto")
    sampler.sample(jobs)  # warm-up
    t_floor, t_sampler, ratio = interleaved(lambda: floor_call(pipe, jobs), lambda: sampler.sample(jobs), 5)
    validation_rss = peak_rss_mb()
    print(
        f"{family}: pipeline by hand {t_floor:6.3f} s; validation sampling {t_sampler:6.3f} s; "
        f"{ratio:.3f}x floor; peak RSS {training_rss:.0f} MB after a training step, "
        f"{validation_rss:.0f} MB after validations (+{validation_rss - training_rss:.0f} MB)"
    )
    verdict = "OK" if ratio <= 1.05 else "MISSED"
    print(f"target: {family} sampling <= 1.05x the pipeline by hand: {ratio:.3f}x -> {verdict}")


def main() -> None:
    print(f"machine: {machine()}; 8 images of 64 px, 8 steps, CFG; median of 5 interleaved pairs")
    for family in ("sd", "sdxl", "sd3", "flux"):
        done = subprocess.run([sys.executable, __file__, family], capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(done.stderr[-3000:])
        print(done.stdout, end="")


if __name__ == "__main__":
    if len(sys.argv) > 1:
        measure(sys.argv[1])
    else:
        main()
