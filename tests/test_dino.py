"""``dino``: DreamBench's DINO score on a tiny ViT saved as ``facebook/dino-vits16`` publishes it, checked
against a re-derivation with DINO's own evaluation transform (torchvision's Resize(256, bicubic),
CenterCrop(224), ToTensor, ImageNet Normalize) and the CLS token of transformers' model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from sdcallbacks.config import metrics as mc
from sdcallbacks.metrics import METRICS
from sdcallbacks.metrics.images import ImageFolder
from sdcallbacks.testing.backbones import write_dino
from sdcallbacks.weights import WeightsNotFoundError
from tests.test_metrics import folder_of, jobs_for, squares


def _reference_scores(folder, images, references):
    """The DINO score as DreamBench computes it, written from DINO's eval_linear.py transform."""
    from torchvision import transforms
    from transformers import AutoModel

    transform = transforms.Compose(
        [
            transforms.Resize(256, interpolation=transforms.InterpolationMode.BICUBIC),
            transforms.CenterCrop(224),
            transforms.ToTensor(),
            transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
        ]
    )
    model = AutoModel.from_pretrained(folder).eval()

    def cls(batch):
        with torch.no_grad():
            pixels = torch.stack([transform(im.convert("RGB")) for im in batch])
            return torch.nn.functional.normalize(model(pixel_values=pixels).last_hidden_state[:, 0], dim=1)

    return (cls(images) @ cls(references).T).mean(dim=1).tolist()


@pytest.mark.parametrize("kind", ["vit", "dinov2"])
def test_dino_is_dreambenchs_mean_cls_cosine_to_each_reference(tmp_path, kind):
    model = write_dino(tmp_path / "dino", kind)
    refs = folder_of(tmp_path / "refs", squares(3, size=300, seed=5))
    # Sizes that exercise the resize and the crop: portrait, landscape, smaller than the crop.
    images = [squares(1, size=300, seed=7)[0].resize((300, 420)), squares(1, seed=8)[0].resize((500, 260))]
    images.append(squares(1, size=96, seed=9)[0])
    metric = METRICS["dino"](mc.DinoConfig(references=refs, model=str(model)))
    scores = metric.score(images, jobs_for("a", "b", "c"))["dino"]
    expected = _reference_scores(model, images, ImageFolder.read(refs).images)
    assert scores == pytest.approx(expected, abs=1e-5)
    assert len(set(np.round(scores, 6))) == 3  # the images differ, so do their scores


def test_dino_embeds_the_cls_token_not_the_pooler(tmp_path):
    """A checkpoint saved with a pooler (as ViT classification models are) still scores by CLS."""
    from transformers import ViTConfig, ViTModel

    torch.manual_seed(0)
    shape = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64}
    ViTModel(ViTConfig(image_size=224, patch_size=16, **shape)).save_pretrained(tmp_path / "pooled")
    refs = folder_of(tmp_path / "refs", squares(2, seed=1))
    images = squares(2, seed=2)
    metric = METRICS["dino"](mc.DinoConfig(references=refs, model=str(tmp_path / "pooled")))
    scores = metric.score(images, jobs_for("a", "b"))["dino"]
    assert scores == pytest.approx(
        _reference_scores(tmp_path / "pooled", images, ImageFolder.read(refs).images), abs=1e-5
    )


def test_dino_weights_missing_offline_is_the_clear_weights_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty_cache"))
    refs = folder_of(tmp_path / "refs", squares(1))
    metric = METRICS["dino"](mc.DinoConfig(references=refs))  # facebook/dino-vits16, not cached
    with pytest.raises(WeightsNotFoundError, match="facebook/dino-vits16"):
        metric.score([Image.new("RGB", (64, 64))], jobs_for("a"))
