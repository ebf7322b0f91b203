"""The offline tiny world: everything tests and the demo need, built locally in published formats.

Layout of ``<cache>/tiny-world-v<WORLD_VERSION>/``:

* ``pipeline/``: a Stable Diffusion pipeline folder (``StableDiffusionPipeline.from_pretrained`` loads it)
  with the real CLIP BPE tokenizer, a tiny VAE and a tiny UNet pretrained on synthetic shapes;
* ``tagger/``: WD14-format ``model.onnx`` + ``selected_tags.csv`` that read colours;
* ``clip/``: an open_clip ``local-dir`` model; ``laion_head.pth``: a LAION aesthetic head;
* ``facenet/20180402-114759-vggface2.pt``: InceptionResnetV1 weights in facenet-pytorch's layout;
* ``concept/``: the concept the demo's LoRA learns, laid out for both kinds of diffusers script:
  ``concept/images/`` holds only the images (DreamBooth's ``--instance_data_dir``, which opens every file
  in the folder) and ``concept/metadata.jsonl`` captions them as ``images/<name>`` (an ``imagefolder`` for
  text_to_image's ``--train_data_dir``).

The world is built once and cached; bump :data:`WORLD_VERSION` whenever the builder changes, and the
next run builds a fresh world beside the old one. Builds go to a temporary folder that is renamed into
place, so an interrupted build leaves nothing half-written and concurrent builders do not collide.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sdcallbacks.weights import default_cache_dir

WORLD_VERSION = 4
Progress = Callable[[str], None]


def print_progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class TinyWorld:
    root: Path

    @property
    def pipeline_dir(self) -> Path:
        return self.root / "pipeline"

    @property
    def tagger_dir(self) -> Path:
        return self.root / "tagger"

    @property
    def clip_dir(self) -> Path:
        return self.root / "clip"

    @property
    def laion_head_path(self) -> Path:
        return self.root / "laion_head.pth"

    @property
    def facenet_weights_path(self) -> Path:
        return self.root / "facenet" / "20180402-114759-vggface2.pt"

    @property
    def concept_dir(self) -> Path:
        """The concept as an ``imagefolder`` (``metadata.jsonl`` + ``images/``)."""
        return self.root / "concept"

    @property
    def concept_images_dir(self) -> Path:
        """The concept's images alone: DreamBooth's ``--instance_data_dir``."""
        return self.concept_dir / "images"

    def concept_samples(self) -> list[tuple[Path, str]]:
        """(image path, caption) pairs of the concept training set."""
        from sdcallbacks.metrics.loss.val_loss import read_imagefolder_captions

        captions = read_imagefolder_captions(self.concept_dir)  # diffusers' imagefolder layout
        return [(self.concept_dir / name, text) for name, text in captions.items()]


@dataclass(frozen=True)
class WorldRecipe:
    """How much pretraining the base model gets (about 6 minutes on 2 CPU cores by default)."""

    vae_steps: int = 400
    unet_steps: int = 600
    batch_size: int = 16
    seed: int = 0


def _build(root: Path, recipe: WorldRecipe, progress: Progress) -> None:
    import torch
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    from sdcallbacks.testing import pretrain
    from sdcallbacks.testing.backbones import write_facenet_weights, write_laion_head, write_tiny_open_clip
    from sdcallbacks.testing.shapes import CONCEPT_COLOUR, make_samples
    from sdcallbacks.testing.tagger import write_tagger
    from sdcallbacks.testing.tokenizer import build_clip_tokenizer

    threads = torch.get_num_threads()
    started = time.monotonic()
    try:
        progress("[1/5] tokenizer and backbone files")
        tokenizer = build_clip_tokenizer(root / "tokenizer_src")
        write_tagger(root / "tagger")
        write_tiny_open_clip(root / "clip", seed=recipe.seed)
        write_laion_head(root / "laion_head.pth", seed=recipe.seed)
        write_facenet_weights(root / "facenet" / "20180402-114759-vggface2.pt", seed=recipe.seed)

        progress(f"[2/5] pretraining the tiny VAE ({recipe.vae_steps} steps)")
        torch.manual_seed(recipe.seed)
        vae = pretrain.tiny_vae()
        scaling = pretrain.train_vae(vae, recipe.vae_steps, recipe.batch_size, recipe.seed, progress)
        vae.register_to_config(scaling_factor=scaling)

        progress(f"[3/5] pretraining the tiny text-conditioned UNet ({recipe.unet_steps} steps)")
        text_encoder = pretrain.tiny_text_encoder(len(tokenizer))
        unet = pretrain.tiny_unet()
        scheduler = pretrain.noise_scheduler()
        pretrain.train_unet(
            unet,
            text_encoder,
            tokenizer,
            vae,
            scheduler,
            recipe.unet_steps,
            recipe.batch_size,
            recipe.seed,
            progress,
        )

        progress("[4/5] writing the pipeline folder")
        # Training uses the DDPM scheduler saved here; validation builds DDIM from its config.
        pipe = StableDiffusionPipeline(
            vae=vae,
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            unet=unet,
            scheduler=scheduler,
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
        pipe.save_pretrained(root / "pipeline", safe_serialization=True)
        assert isinstance(DDIMScheduler.from_config(scheduler.config), DDIMScheduler)
        shutil.rmtree(root / "tokenizer_src")

        progress("[5/5] concept images")
        concept = root / "concept"
        (concept / "images").mkdir(parents=True)
        with (concept / "metadata.jsonl").open("w", encoding="utf-8") as fh:
            samples = make_samples((CONCEPT_COLOUR,), ("white",), 16, pretrain.IMAGE_SIZE, seed=99)
            for i, sample in enumerate(samples):
                name = f"images/{i:03d}.png"
                sample.image.save(concept / name)
                fh.write(json.dumps({"file_name": name, "text": sample.caption}) + "\n")
    finally:
        torch.set_num_threads(threads)
    (root / "READY.json").write_text(
        json.dumps(
            {
                "version": WORLD_VERSION,
                "recipe": recipe.__dict__,
                "build_seconds": round(time.monotonic() - started, 1),
            }
        ),
        encoding="utf-8",
    )


def staged_build(root: Path, build: Callable[[Path], None], progress: Progress, what: str) -> Path:
    """``root``, built first unless its ``READY.json`` is there: ``build`` fills a staging folder of the
    same cache (writing ``READY.json`` last), which is then renamed into place, so an interrupted build
    leaves nothing half-written and concurrent builders do not collide."""
    if (root / "READY.json").is_file():
        return root
    cache = root.parent
    cache.mkdir(parents=True, exist_ok=True)
    for stale in remove_stale_builds(cache):
        progress(f"sdcallbacks: removed {stale}, left by a build that was killed")
    progress(f"sdcallbacks: building {what}")
    staging = cache / f".building-{uuid.uuid4().hex}"
    staging.mkdir()
    try:
        build(staging)
        try:
            os.replace(staging, root)
        except OSError:
            if not (root / "READY.json").is_file():  # a concurrent builder won the race otherwise
                shutil.rmtree(root, ignore_errors=True)
                os.replace(staging, root)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    progress(f"sdcallbacks: ready at {root}")
    return root


STALE_BUILD_S = 24 * 3600  # a build takes minutes: a staging folder this old belongs to a killed process


def remove_stale_builds(cache: Path, max_age_s: float = STALE_BUILD_S) -> list[Path]:
    """Delete ``.building-*`` folders older than ``max_age_s`` (a killed build's ``finally`` never ran);
    younger ones may belong to a build running beside this one and are left alone."""
    now = time.time()
    stale = []
    for folder in cache.glob(".building-*"):
        try:
            if folder.is_dir() and now - folder.stat().st_mtime > max_age_s:
                shutil.rmtree(folder, ignore_errors=True)
                stale.append(folder)
        except OSError:  # removed by a concurrent builder meanwhile
            continue
    return stale


def build_tiny_world(
    cache_dir: Path | str | None = None, recipe: WorldRecipe | None = None, progress: Progress | None = None
) -> TinyWorld:
    """Return the cached tiny world, building it first if needed (minutes on 2 CPU cores)."""
    recipe = recipe or WorldRecipe()
    progress = progress or print_progress
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    suffix = ""
    if recipe != WorldRecipe():
        suffix = "-" + hashlib.sha256(json.dumps(recipe.__dict__, sort_keys=True).encode()).hexdigest()[:10]
    root = cache / f"tiny-world-v{WORLD_VERSION}{suffix}"
    staged_build(
        root,
        lambda staging: _build(staging, recipe, progress),
        progress,
        f"the tiny world in {root} (once; a few minutes on 2 CPU cores)",
    )
    return TinyWorld(root)
