"""Shared fixtures: a tiny random-weight SD pipeline with the real CLIP tokenizer (seconds to build),
and the pretrained tiny world (minutes, cached) for the tests that need a model that can draw."""

from __future__ import annotations

import os
import tempfile

import pytest

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# MLflow's default store is ./mlflow.db and ./mlruns in the working directory, i.e. the repository: any
# MLflow client a test starts without its own store writes to a temporary folder instead.
os.environ.setdefault(
    "MLFLOW_TRACKING_URI", f"sqlite:///{tempfile.mkdtemp(prefix='sdcallbacks-mlflow-')}/mlflow.db"
)


@pytest.fixture(scope="session")
def clip_tokenizer(tmp_path_factory):
    from sdcallbacks.testing.tokenizer import build_clip_tokenizer

    return build_clip_tokenizer(tmp_path_factory.mktemp("tokenizer"))


@pytest.fixture(scope="session")
def t5_tokenizer(tmp_path_factory):
    """A T5 unigram tokenizer over CLIP's word vocabulary, saved and loaded as SD3/Flux pipelines do."""
    from sdcallbacks.testing.tokenizer import build_t5_tokenizer

    return build_t5_tokenizer(tmp_path_factory.mktemp("t5_tokenizer"))


@pytest.fixture
def tiny_modules(clip_tokenizer):
    """Random-weight tiny UNet/VAE/text encoder (the world's architectures) with a LoRA on the UNet."""
    from sdcallbacks.testing.modules import tiny_lora_modules

    return tiny_lora_modules(clip_tokenizer)


@pytest.fixture
def modules_of(tiny_modules, clip_tokenizer, t5_tokenizer):
    """``modules_of(family)``: random-weight tiny modules of ``sd`` (``tiny_modules``), ``sdxl``, ``sd3`` or
    ``flux``, each with a LoRA on its denoiser."""
    from sdcallbacks.testing import modules

    def build(family: str):
        if family == "sd":
            return tiny_modules
        if family == "sdxl":
            return modules.tiny_sdxl_modules(clip_tokenizer)
        build_flow = {"sd3": modules.tiny_sd3_modules, "flux": modules.tiny_flux_modules}[family]
        return build_flow(clip_tokenizer, t5_tokenizer)

    return build


@pytest.fixture(scope="session")
def tiny_world():
    from sdcallbacks.testing.world import build_tiny_world

    return build_tiny_world()


@pytest.fixture(scope="session")
def backbones(tmp_path_factory):
    """Every backbone file in its published format (random weights, real layouts), built in seconds."""
    from types import SimpleNamespace

    from sdcallbacks.testing import backbones as ev
    from sdcallbacks.testing.tagger import write_tagger

    root = tmp_path_factory.mktemp("backbones")
    return SimpleNamespace(
        root=root,
        clip=f"local-dir:{ev.write_tiny_open_clip(root / 'clip')}",
        laion_head=ev.write_laion_head(root / "laion_head.pth"),
        facenet=ev.write_facenet_weights(root / "facenet" / "20180402-114759-vggface2.pt"),
        tagger=write_tagger(root / "tagger"),
        anime=ev.write_anime_aesthetic(root / "anime"),
        ccip=ev.write_ccip(root / "ccip"),
        vgg19=ev.write_torchvision_features(root / "vgg19-dcbb9e9d.pth", "vgg19"),
        alexnet=ev.write_torchvision_features(root / "alexnet-owt-7be5be79.pth", "alexnet"),
        inception=ev.write_inception(root / "inception.pth"),
        dino=ev.write_dino(root / "dino"),
        hpsv2=ev.write_hpsv2(root / "hpsv2"),
        pickscore=ev.write_pickscore(root / "pickscore"),
        image_reward=ev.write_image_reward(root / "image_reward"),
    )


@pytest.fixture(scope="session")
def astronaut():
    from PIL import Image
    from skimage import data

    return Image.fromarray(data.astronaut())


@pytest.fixture(scope="session")
def tagger_dir(tmp_path_factory):
    """A WD14-format tagger (ONNX + selected_tags.csv) that tags colours."""
    from sdcallbacks.testing.tagger import write_tagger

    return write_tagger(tmp_path_factory.mktemp("tagger"))


def pytest_collection_modifyitems(items):
    """Every test that needs the pretrained tiny world is ``slow`` (minutes to build once): marked here,
    from its fixtures, so no such test can miss the mark; ``pytest -m "not slow"`` skips them all."""
    for item in items:
        if "tiny_world" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)


@pytest.fixture
def fake_save(monkeypatch):
    """Checkpoint bookkeeping without real weights: each save writes a marker file."""
    from sdcallbacks.selection import checkpoint

    def save(weights, folder):
        folder.mkdir(parents=True)
        (folder / "weights").write_text(str(weights))

    monkeypatch.setattr(checkpoint, "save_weights", save)
