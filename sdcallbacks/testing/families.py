"""Pipeline folders of every model family for the offline examples, in diffusers' published layout.

``sd15`` is the tiny world's pretrained pipeline (it learns; the demo's). The others are random-weight
tiny pipelines, built in seconds with the tiny world's real CLIP tokenizer (and for SD3 and Flux a T5
tokenizer built from its vocabulary, :func:`~sdcallbacks.testing.tokenizer.build_t5_tokenizer`), saved
with the pipeline's own ``save_pretrained`` (``model_index.json``, one folder per component), so
``from_pretrained`` and the examples' per-component loading read them as they read a published model.
Cached beside the tiny world, as ``tiny-<family>-v<FAMILY_VERSION>/pipeline``.
"""

from __future__ import annotations

import json
from pathlib import Path

from sdcallbacks.testing.world import Progress, TinyWorld, print_progress, staged_build

FAMILIES = ("sd15", "sdxl", "sd3", "flux")
FAMILY_VERSION = 1


def _build(family: str, folder: Path, world: TinyWorld) -> None:
    from transformers import CLIPTokenizer

    from sdcallbacks.sampling.pipeline import build_pipeline
    from sdcallbacks.testing import modules
    from sdcallbacks.testing.tokenizer import build_t5_tokenizer

    tokenizer = CLIPTokenizer.from_pretrained(world.pipeline_dir / "tokenizer")
    if family == "sdxl":
        live = modules.tiny_sdxl_modules(tokenizer, lora=False)
    else:
        t5 = build_t5_tokenizer(folder / "t5_tokenizer")
        build = {"sd3": modules.tiny_sd3_modules, "flux": modules.tiny_flux_modules}[family]
        live = build(tokenizer, t5, lora=False)
    build_pipeline(live, "training").save_pretrained(folder / "pipeline")
    (folder / "READY.json").write_text(
        json.dumps({"family": family, "version": FAMILY_VERSION}), encoding="utf-8"
    )


def family_pipeline(family: str, world: TinyWorld, progress: Progress | None = None) -> Path:
    """The pipeline folder of ``family`` (built first if needed)."""
    if family == "sd15":
        return world.pipeline_dir
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; expected one of {FAMILIES}")
    root = world.root.parent / f"tiny-{family}-v{FAMILY_VERSION}"
    staged_build(
        root,
        lambda staging: _build(family, staging, world),
        progress or print_progress,
        f"a tiny {family} pipeline in {root}",
    )
    return root / "pipeline"
