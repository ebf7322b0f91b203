"""The full metric suite against its floor: the sum of each backbone's bare forward on the same images.

Every backbone must run at least once per image, so the floor is Σ over backbones of one ``embed`` of the
batch (weights already loaded). The suite (target: at most 1.15x the floor) scores the same batch with
every metric through a shared backbone pool, as a validation does. A third figure is the baseline some
trainers use today: each metric reloads its evaluator on every call. Tiny-world evaluators (random
weights, real layouts) on the CPU; references are 4 images, the batch is 16 images of 4 prompts.
Run: ``python bench/bench_metrics.py``.
"""

from __future__ import annotations

import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from sdcallbacks.config import MetricsConfig, PromptDefaults, PromptEntry
from sdcallbacks.metrics import BackbonePool, ImageBatch, build_metrics
from sdcallbacks.prompts.library import expand_jobs, resolve_prompts
from sdcallbacks.testing import evaluators as ev
from sdcallbacks.testing.shapes import draw_square
from sdcallbacks.testing.tagger import write_tagger


def build(root: Path) -> MetricsConfig:
    refs = root / "refs"
    refs.mkdir()
    rng = np.random.default_rng(1)
    for i, colour in enumerate(["red", "green", "blue", "yellow"]):
        draw_square(colour, "white", 64, rng).save(refs / f"{i}.png")
    clip = {"model": f"local-dir:{ev.write_tiny_open_clip(root / 'clip')}", "pretrained": None}
    return MetricsConfig(
        tag_accuracy={"model": str(write_tagger(root / "tagger"))},
        aesthetic_laion={"head": str(ev.write_laion_head(root / "head.pth")), "clip": clip},
        aesthetic_anime={"model": str(ev.write_anime_aesthetic(root / "anime")), "size": 256},
        clip_score={"clip": clip},
        clip_i={"references": refs, "clip": clip},
        diversity={"trunk_weights": str(ev.write_torchvision_features(root / "alex.pth", "alexnet"))},
        diversity_clip={"clip": clip},
        kid={"references": refs, "clip": clip, "subsets": 10},
        cmmd={"references": refs, "clip": clip},
        style_loss={
            "references": refs,
            "weights": str(ev.write_torchvision_features(root / "vgg.pth", "vgg19")),
            "size": (128, 128),
        },
        ccip={"references": refs, "model": str(ev.write_ccip(root / "ccip"))},
        identity={"references": refs, "weights": str(ev.write_facenet_weights(root / "facenet.pt"))},
    )


def timed(fn, repeats: int = 5) -> float:
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - start)
    return statistics.median(runs)


def main() -> None:
    torch.set_num_threads(max(1, torch.get_num_threads()))
    with tempfile.TemporaryDirectory() as tmp:
        config = build(Path(tmp))
        config.identity = None  # square references have no face; identity is timed on its own below
        entries = [
            PromptEntry(prompt=f"{c} square, white background") for c in ("red", "green", "blue", "yellow")
        ]
        jobs = expand_jobs(resolve_prompts(entries, PromptDefaults(num_images=4), 0))
        rng = np.random.default_rng(0)
        images = [draw_square(j.prompt.prompt.split()[0], "white", 64, rng) for j in jobs]

        pool = BackbonePool()
        metrics = build_metrics(config.enabled(), pool=pool)
        for metric in metrics:  # load weights and embed references once, as a run does
            metric.score(ImageBatch.of(images, jobs))

        def suite():
            batch = ImageBatch.of(images, jobs)
            for metric in metrics:
                metric.score(batch)

        def floor():
            for backbone in pool:
                if backbone.key.startswith("lpips"):  # LPIPS embeds per prompt group; same images in total
                    for start in range(0, len(images), 4):
                        backbone.embed(images[start : start + 4])
                else:
                    backbone.embed(images)

        def reload_each_call():
            batch = ImageBatch.of(images, jobs)
            for metric in build_metrics(config.enabled(), pool=BackbonePool()):
                metric.score(batch)

        t_floor, t_suite = timed(floor), timed(suite)
        t_reload = timed(reload_each_call, repeats=3)
    print(
        f"machine: {platform.machine()} {platform.processor() or ''}, {torch.get_num_threads()} threads, "
        f"torch {torch.__version__}"
    )
    print(f"backbones: {len(pool)} ({', '.join(b.key.split(':')[0] for b in pool)}); {len(images)} images")
    print(f"floor (sum of bare backbone forwards): {t_floor * 1000:8.1f} ms   1.00x")
    print(f"metric suite (shared pool):            {t_suite * 1000:8.1f} ms   {t_suite / t_floor:.2f}x floor")
    print(
        f"baseline (reload evaluators per call): {t_reload * 1000:8.1f} ms   {t_reload / t_suite:.1f}x suite"
    )


if __name__ == "__main__":
    main()
