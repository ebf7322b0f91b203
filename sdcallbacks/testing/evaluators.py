"""Tiny evaluator files in the published formats, for the loaders of the real models.

* ``clip/``: an open_clip ``local-dir`` folder (``open_clip_config.json`` + ``open_clip_model.safetensors``),
  the format of open_clip's hub repos, with QuickGELU like OpenAI's CLIP.
* ``laion_head.pth``: a LAION improved-aesthetic-predictor head state_dict (keys ``layers.{0,2,4,6,7}``),
  sized for the tiny CLIP's embedding.
* ``facenet/20180402-114759-vggface2.pt``: an InceptionResnetV1 state_dict with the vggface2 logits
  (8631 classes), the file facenet-pytorch downloads; random weights, real layout.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

TINY_CLIP_EMBED_DIM = 32
TINY_CLIP_CONFIG = {
    "embed_dim": TINY_CLIP_EMBED_DIM,
    "quick_gelu": True,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "head_width": 32, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
VGGFACE2_CLASSES = 8631


def write_tiny_open_clip(folder: Path, seed: int = 0) -> Path:
    import open_clip
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = open_clip.CLIP(
        **{k: v for k, v in TINY_CLIP_CONFIG.items() if k != "quick_gelu"},
        quick_gelu=TINY_CLIP_CONFIG["quick_gelu"],
    )
    config = {
        "model_cfg": TINY_CLIP_CONFIG,
        "preprocess_cfg": {
            "mean": list(OPENAI_MEAN),
            "std": list(OPENAI_STD),
            "interpolation": "bicubic",
            "resize_mode": "shortest",
        },
    }
    (folder / "open_clip_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    save_file(
        {k: v.contiguous() for k, v in model.state_dict().items()},
        str(folder / "open_clip_model.safetensors"),
    )
    return folder


def write_laion_head(path: Path, in_features: int = TINY_CLIP_EMBED_DIM, seed: int = 0) -> Path:
    """Same layer layout as ``sac+logos+ava1-l14-linearMSE.pth`` (768 → 1024 → 128 → 64 → 16 → 1)."""
    torch.manual_seed(seed)
    layers = torch.nn.Sequential(
        torch.nn.Linear(in_features, 1024),
        torch.nn.Dropout(0.2),
        torch.nn.Linear(1024, 128),
        torch.nn.Dropout(0.2),
        torch.nn.Linear(128, 64),
        torch.nn.Dropout(0.1),
        torch.nn.Linear(64, 16),
        torch.nn.Linear(16, 1),
    )
    state = {f"layers.{k}": v for k, v in layers.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return path


def write_facenet_weights(path: Path, seed: int = 0) -> Path:
    from facenet_pytorch import InceptionResnetV1

    torch.manual_seed(seed)
    model = InceptionResnetV1(pretrained=None, classify=True, num_classes=VGGFACE2_CLASSES)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    return path
