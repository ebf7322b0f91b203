"""Shared by the benchmarks: timing, the machine line, and the mid-size backbone world.

The mid-size world uses real architectures with random weights, built locally in the published formats:
open_clip ViT-B/16 (the size of the CLIP models users run beside ViT-L/14), InceptionResnetV1 with
facenet-pytorch's real MTCNN, torchvision AlexNet (LPIPS trunk) and VGG19 (style). The ONNX backbones
(WD14 tagger, anime aesthetic, CCIP) stay tiny: building mid-size ONNX graphs needs an exporter
(onnxscript) that is not a dependency here; their share of the real cost is therefore understated.
"""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from sdcallbacks.config import MetricsConfig, PromptDefaults, PromptEntry
from sdcallbacks.prompts.library import ImageJob, expand_jobs, resolve_prompts
from sdcallbacks.testing import backbones as ev
from sdcallbacks.testing.shapes import draw_square
from sdcallbacks.testing.tagger import write_tagger

COLOURS = ("red", "green", "blue", "yellow")


def machine() -> str:
    cuda = f", CUDA {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    return (
        f"{platform.machine()}, {torch.get_num_threads()} torch threads, python {platform.python_version()}, "
        f"torch {torch.__version__}{cuda}"
    )


def timed(fn: Callable[[], object], repeats: int) -> float:
    """Median wall seconds of ``repeats`` calls."""
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - start)
    return statistics.median(runs)


def interleaved(
    first: Callable[[], object], second: Callable[[], object], repeats: int
) -> tuple[float, float, float]:
    """``first`` and ``second`` run alternately ``repeats`` times each: their median wall seconds and the
    median of the per-repetition ratios second/first. Load on a shared machine then falls on both sides of
    each pair alike, instead of on whichever one happened to run during it."""
    a, b = [], []
    for _ in range(repeats):
        for fn, runs in ((first, a), (second, b)):
            start = time.perf_counter()
            fn()
            runs.append(time.perf_counter() - start)
    ratios = [y / x for x, y in zip(a, b)]
    return statistics.median(a), statistics.median(b), statistics.median(ratios)


def astronaut(size: int) -> Image.Image:
    from skimage import data

    return Image.fromarray(data.astronaut()).resize((size, size))


def bench_images(size: int = 512) -> tuple[list[Image.Image], list[ImageJob]]:
    """16 images of 4 prompts: three prompts of coloured squares and one of a face (the identity metric
    needs faces)."""
    entries = [PromptEntry(prompt=f"{c} square, white background") for c in COLOURS[:3]]
    entries.append(PromptEntry(prompt="a photo of an astronaut"))
    jobs = expand_jobs(resolve_prompts(entries, PromptDefaults(num_images=4), 0))
    rng = np.random.default_rng(0)
    face = astronaut(size)
    images = [
        face.rotate(3 * job.image_index)
        if "astronaut" in job.prompt.prompt
        else draw_square(job.prompt.prompt.split()[0], "white", size, rng)
        for job in jobs
    ]
    return images, jobs


def mid_size_suite(root: Path) -> MetricsConfig:
    """Every image and set metric (FID/IS aside: they need the [fid] extra) on mid-size backbones: DINO
    ViT-S/16, PickScore's transformers CLIP at ViT-B/32's size, HPS on open_clip ViT-B/16."""
    import open_clip

    refs, faces = root / "refs", root / "faces"
    refs.mkdir(parents=True)
    faces.mkdir()
    rng = np.random.default_rng(1)
    for i, colour in enumerate(COLOURS):
        draw_square(colour, "white", 512, rng).save(refs / f"{i}.png")
    astronaut(512).save(faces / "0.png")
    vit_b16 = {**open_clip.get_model_config("ViT-B-16"), "quick_gelu": True}
    clip = {"model": f"local-dir:{ev.write_open_clip(root / 'clip', vit_b16)}", "pretrained": None}
    head = ev.write_laion_head(root / "head.pth", in_features=vit_b16["embed_dim"])
    return MetricsConfig(
        identity={"references": faces, "weights": str(ev.write_facenet_weights(root / "facenet.pt"))},
        tag_accuracy={"model": str(write_tagger(root / "tagger"))},
        aesthetic_laion={"head": str(head), "clip": clip},
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
            "size": (224, 224),
        },
        ccip={"references": refs, "model": str(ev.write_ccip(root / "ccip"))},
        dino={"references": refs, "model": str(ev.write_dino(root / "dino", shape=ev.VIT_S))},
        pickscore=dict(
            zip(("model", "processor"), map(str, ev.write_pickscore(root / "pick", mid_size=True)))
        ),
        hpsv2=dict(zip(("model", "architecture"), map(str, ev.write_hpsv2(root / "hps", model_cfg=vit_b16)))),
    )
