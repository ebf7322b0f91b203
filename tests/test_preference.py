"""Preference metrics against their authors' code on the same tiny weights in the published layouts:
``hpsv2`` as ``hpsv2.score`` computes it (open_clip, ``output_dict=True``, the diagonal of image x text
features), ``pickscore`` as PickScore's README does (its processor, ``logit_scale.exp()`` x cosine); and
the weights error before training when they are missing offline."""

from __future__ import annotations

import pytest
import torch
import yaml

from sdcallbacks import ValidationCallback
from sdcallbacks.cli import main as cli
from sdcallbacks.config import ConfigError
from sdcallbacks.config import metrics as mc
from sdcallbacks.metrics import METRICS
from sdcallbacks.weights import WeightsNotFoundError
from tests.test_metrics import jobs_for, squares

PROMPTS = ("a red square", "a green square on white", "blue", "a yellow square, flat colours, icon")


def _images():
    images = squares(4, size=96, seed=11)
    images[1] = images[1].resize((120, 80))  # landscape: the resize and the crop both act
    images[2] = images[2].convert("RGBA")  # alpha is dropped as the other metrics do
    return images


def hps_reference(checkpoint, architecture, images, prompts):
    """hpsv2.score's computation, per (image, prompt)."""
    import open_clip

    open_clip.add_model_config(architecture)
    model, _, preprocess_val = open_clip.create_model_and_transforms(architecture.stem, output_dict=True)
    model.load_state_dict(torch.load(checkpoint, map_location="cpu")["state_dict"])
    model.eval()
    tokenizer = open_clip.get_tokenizer(architecture.stem)
    scores = []
    with torch.no_grad():
        for image, prompt in zip(images, prompts):
            outputs = model(preprocess_val(image.convert("RGB")).unsqueeze(0), tokenizer([prompt]))
            logits = outputs["image_features"] @ outputs["text_features"].T
            scores.append(float(torch.diagonal(logits)[0]))
    return scores


def test_hpsv2_equals_hpsv2s_own_computation(backbones):
    checkpoint, architecture = backbones.hpsv2
    metric = METRICS["hpsv2"](mc.Hpsv2Config(model=str(checkpoint.parent), architecture=str(architecture)))
    images = _images()
    scores = metric.score(images, jobs_for(*PROMPTS))["hpsv2"]
    assert scores == pytest.approx(hps_reference(checkpoint, architecture, images, PROMPTS), abs=1e-6)
    assert len({round(s, 6) for s in scores}) == 4
    assert all(-1.0 <= s <= 1.0 for s in scores)  # a cosine: no logit scale


def pickscore_reference(model_folder, processor_folder, images, prompts):
    """PickScore's README: the processor on images and on the prompt, normalised features, the logit."""
    from transformers import AutoModel, AutoProcessor

    processor = AutoProcessor.from_pretrained(processor_folder)
    model = AutoModel.from_pretrained(model_folder).eval()

    def features(output):
        return output if isinstance(output, torch.Tensor) else output.pooler_output

    scores = []
    with torch.no_grad():
        for image, prompt in zip(images, prompts):
            image_inputs = processor(
                images=[image.convert("RGB")],
                padding=True,
                truncation=True,
                max_length=77,
                return_tensors="pt",
            )
            text_inputs = processor(
                text=prompt, padding=True, truncation=True, max_length=77, return_tensors="pt"
            )
            image_embs = features(model.get_image_features(**image_inputs))
            image_embs = image_embs / torch.norm(image_embs, dim=-1, keepdim=True)
            text_embs = features(model.get_text_features(**text_inputs))
            text_embs = text_embs / torch.norm(text_embs, dim=-1, keepdim=True)
            scores.append(float(model.logit_scale.exp() * (text_embs @ image_embs.T)[0][0]))
    return scores


def test_pickscore_equals_the_authors_computation(backbones):
    model_folder, processor_folder = backbones.pickscore
    config = mc.PickScoreConfig(model=str(model_folder), processor=str(processor_folder))
    metric = METRICS["pickscore"](config)
    images = _images()
    scores = metric.score(images, jobs_for(*PROMPTS))["pickscore"]
    expected = pickscore_reference(model_folder, processor_folder, images, PROMPTS)
    assert scores == pytest.approx(expected, rel=1e-5, abs=1e-5)
    assert len({round(s, 5) for s in scores}) == 4


def test_missing_preference_weights_offline_are_located_errors_before_training(tmp_path, monkeypatch, capsys):
    """The published defaults are not in this machine's hub cache: offline, the config check names each
    file before training, and a metric built anyway raises the weights error on load."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    data = {
        "output_dir": str(tmp_path / "out"),
        "prompts": [{"prompt": "a red square"}],
        "metrics": {"pickscore": {}, "hpsv2": {}},
    }
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        ValidationCallback.from_config(path)
    message = str(err.value)
    assert (
        "metrics.pickscore.model: config.json of 'yuvalkirstain/PickScore_v1' is not in the hub cache"
        in message
    )
    assert "metrics.hpsv2.model: HPS_v2.1_compressed.pt of 'xswu/HPSv2' is not in the hub cache" in message
    assert cli(["check-config", str(path)]) == 2
    with pytest.raises(WeightsNotFoundError, match="PickScore_v1"):
        METRICS["pickscore"](mc.PickScoreConfig()).score(squares(1), jobs_for("a"))
    with pytest.raises(WeightsNotFoundError, match=r"HPS_v2\.1_compressed\.pt"):
        METRICS["hpsv2"](mc.Hpsv2Config()).score(squares(1), jobs_for("a"))


def test_a_local_hps_folder_without_the_versions_file_is_a_located_error(backbones, tmp_path):
    checkpoint, architecture = backbones.hpsv2
    data = {
        "output_dir": str(tmp_path / "out"),
        "prompts": [{"prompt": "a red square"}],
        "metrics": {
            "hpsv2": {"model": str(checkpoint.parent), "version": "v2.0", "architecture": str(architecture)}
        },
    }
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    with pytest.raises(
        ConfigError, match=r"metrics\.hpsv2\.model: the folder .* has no HPS_v2_compressed\.pt"
    ):
        ValidationCallback.from_config(path)
