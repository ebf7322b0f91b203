"""The full metric suite against its floor, and against reloading backbones per call.

Every backbone must run at least once per image, so the floor is the sum over backbones of one bare
``embed`` of the batch (weights already loaded). The suite scores the same batch with every metric
through one shared backbone pool, as a validation does (target: at most 1.15x the floor). The baseline
is what some trainers do today: each metric loads its backbone on every call (target: the suite at least
5x faster). Mid-size backbones (see ``common.py``), 16 images of 512 px in 4 prompts, on this machine's
CPU or GPU. Run: ``python bench/bench_metrics.py [--profile]``.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import bench_images, interleaved, machine, mid_size_suite, timed

from sdcallbacks.metrics import BackbonePool, ImageBatch, build_metrics


def main(profile: bool = False) -> None:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    images, jobs = bench_images()
    with tempfile.TemporaryDirectory() as tmp:
        config = mid_size_suite(Path(tmp))
        pool = BackbonePool()
        metrics = build_metrics(config.enabled(), device=device, pool=pool)
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
            for metric in build_metrics(config.enabled(), device=device, pool=BackbonePool()):
                metric.score(batch)

        def load_all():
            for metric in build_metrics(config.enabled(), device=device, pool=(fresh := BackbonePool())):
                metric.ensure_loaded()
            fresh.load_all()

        t_floor, t_suite, suite_ratio = interleaved(floor, suite, 5)
        t_reload = timed(reload_each_call, 2)
        t_load = timed(load_all, 2)
        per_backbone = [
            (backbone.key.split(":")[0], timed(lambda b=backbone: b.embed(images), 1)) for backbone in pool
        ]  # a list: two backbones of one kind (open_clip for CLIP and HPS) each keep their line
        if profile:
            from torch.profiler import ProfilerActivity
            from torch.profiler import profile as torch_profile

            with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
                suite()
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))
    names = ", ".join(b.key.split(":")[0] for b in pool)
    reload_ratio = t_reload / t_suite
    print(f"machine: {machine()}; device {device}")
    print(f"{len(metrics)} metrics, {len(pool)} backbones ({names}); {len(images)} images of 512 px")
    print(f"floor (sum of bare backbone forwards): {t_floor * 1000:9.1f} ms   1.00x")
    print(
        f"metric suite (shared pool):            {t_suite * 1000:9.1f} ms   {suite_ratio:.2f}x floor "
        "(median of 5 interleaved floor/suite pairs)"
    )
    print(f"baseline (reload backbones per call): {t_reload * 1000:9.1f} ms   {reload_ratio:.1f}x suite")
    print(f"loading every backbone once (incl. reference embeddings): {t_load * 1000:.1f} ms")
    print("floor by backbone: " + ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in per_backbone))
    print(f"target: suite <= 1.15x floor: {suite_ratio:.2f}x -> {'OK' if suite_ratio <= 1.15 else 'MISSED'}")
    print(
        f"target: suite >= 5x faster than reload-per-call: {reload_ratio:.1f}x -> "
        f"{'OK' if reload_ratio >= 5 else 'MISSED'}"
    )


if __name__ == "__main__":
    main(profile="--profile" in sys.argv)
