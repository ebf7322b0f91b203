"""``aesthetic_laion``: the improved aesthetic predictor (christophschuhmann/improved-aesthetic-predictor).

Score = head(e / |e|) with e the OpenAI CLIP ViT-L/14 image embedding (QuickGELU; open_clip's eval
transform, the same preprocessing as ``clip.load``'s) and the head the published MLP
768 → 1024 → 128 → 64 → 16 → 1 with dropout and no activations (keys ``layers.{0,2,4,6,7}``), run in eval
mode. The v1 linear head of LAION-AI/aesthetic-predictor (keys ``weight``, ``bias``) loads too. Scores
are roughly 1..10; ``good_rate`` is the share at or above ``good_threshold`` (6 by default, the
LAION-Aesthetics 6+ cut).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from sdcallbacks.config.metrics import AestheticLaionConfig
from sdcallbacks.metrics.backbones.clip import ClipBackbone, normalized
from sdcallbacks.metrics.base import ImageBatch, ImageMetric, Scores
from sdcallbacks.metrics.registry import register_metric
from sdcallbacks.weights import load_state_dict_file, resolve_file


class AestheticMLP(nn.Module):
    """The improved predictor's head, with the attribute and layer indices of the published state_dict."""

    def __init__(self, in_features: int = 768):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(in_features, 1024),
            nn.Dropout(0.2),
            nn.Linear(1024, 128),
            nn.Dropout(0.2),
            nn.Linear(128, 64),
            nn.Dropout(0.1),
            nn.Linear(64, 16),
            nn.Linear(16, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def load_aesthetic_head(path: Path) -> nn.Module:
    """The improved (MLP) or v1 (linear) LAION head from its state_dict, strict keys, eval mode."""
    state = load_state_dict_file(path)
    if "layers.0.weight" in state:
        head: nn.Module = AestheticMLP(state["layers.0.weight"].shape[1])
    elif set(state) == {"weight", "bias"}:
        head = nn.Linear(state["weight"].shape[1], state["weight"].shape[0])
    else:
        raise ValueError(
            f"{path}: not a LAION aesthetic head; expected keys layers.{{0,2,4,6,7}}.weight/bias (improved "
            f"predictor) or weight/bias (v1 linear), got {sorted(state)[:6]}"
        )
    try:
        head.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise ValueError(f"{path}: keys or shapes do not match the LAION head layout: {err}") from err
    return head.eval()


@register_metric
class AestheticLaion(ImageMetric):
    name = "aesthetic_laion"
    higher_is_better = True
    config_class = AestheticLaionConfig
    config: AestheticLaionConfig

    def load(self) -> None:
        cfg = self.config
        self.clip = self.pool.get(ClipBackbone(cfg.clip, self.device, cfg.batch_size))
        path = resolve_file(cfg.head, cfg.head_filename)
        self.head = load_aesthetic_head(path)
        self.clip.ensure_loaded()
        expected = next(self.head.parameters()).shape[1]
        if self.clip.embed_dim != expected:
            raise ValueError(
                f"aesthetic_laion: {path} expects {expected}-d CLIP embeddings but {cfg.clip.model} gives "
                f"{self.clip.embed_dim}-d; use the CLIP model the head was trained on (ViT-L/14)"
            )

    @torch.inference_mode()
    def compute(self, batch: ImageBatch) -> Scores:
        embeddings = normalized(batch.features.get(self.clip))
        return {self.name: self.head(embeddings).squeeze(1).tolist()}
