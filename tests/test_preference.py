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
from sdcallbacks.weights import WeightsFormatError, WeightsNotFoundError
from tests.test_metrics import jobs_for, squares

PROMPTS = ("a red square", "a green square on white", "blue", "a yellow square, flat colours, icon")


def _images():
    images = squares(4, size=96, seed=11)
    images[1] = images[1].resize((120, 80))  # landscape: the resize and the crop both act
    images[2] = images[2].convert("RGBA")  # alpha is dropped as the other metrics do
    return images


def hps_preprocess_val(image_size):
    """hpsv2's ``preprocess_val``: its open_clip fork's ``image_transform(is_train=False,
    resize_longest_max=True)`` (``light_augmentation=True`` in ``hpsv2.score``), from its source."""
    from torchvision.transforms import Compose, InterpolationMode, Normalize, ToTensor
    from torchvision.transforms import functional as F

    def resize_max_size(img):  # ResizeMaxSize(image_size, fill=0)
        height, width = img.shape[1:]
        scale = image_size / float(max(height, width))
        if scale != 1.0:
            new_size = tuple(round(dim * scale) for dim in (height, width))
            img = F.resize(img, new_size, InterpolationMode.BICUBIC)
            pad_h = image_size - new_size[0]
            pad_w = image_size - new_size[1]
            img = F.pad(img, padding=[pad_w // 2, pad_h // 2, pad_w - pad_w // 2, pad_h - pad_h // 2], fill=0)
        return img

    mean, std = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
    return Compose([ToTensor(), resize_max_size, Normalize(mean=mean, std=std)])


def hps_reference(checkpoint, architecture, images, prompts):
    """hpsv2.score's computation, per (image, prompt)."""
    import open_clip

    open_clip.add_model_config(architecture)
    model = open_clip.create_model(architecture.stem, output_dict=True)
    preprocess_val = hps_preprocess_val(model.visual.image_size[0])
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
        "metrics": {"pickscore": {}, "hpsv2": {}, "image_reward": {}},
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
    assert (
        "metrics.image_reward.model: ImageReward.pt of 'THUDM/ImageReward' is not in the hub cache" in message
    )
    assert (
        "metrics.image_reward.tokenizer: vocab.txt of 'google-bert/bert-base-uncased' is not in the hub cache"
        in message
    )
    assert cli(["check-config", str(path)]) == 2
    with pytest.raises(WeightsNotFoundError, match="PickScore_v1"):
        METRICS["pickscore"](mc.PickScoreConfig()).score(squares(1), jobs_for("a"))
    with pytest.raises(WeightsNotFoundError, match=r"HPS_v2\.1_compressed\.pt"):
        METRICS["hpsv2"](mc.Hpsv2Config()).score(squares(1), jobs_for("a"))
    with pytest.raises(WeightsNotFoundError, match=r"'ImageReward\.pt' for 'THUDM/ImageReward'"):
        METRICS["image_reward"](mc.ImageRewardConfig()).score(squares(1), jobs_for("a"))


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


def image_reward_reference(model_folder, tokenizer_folder, images, prompts):
    """``ImageReward.score`` on the package's modules, re-derived from its source (``ImageReward.py``,
    ``models/BLIP/{vit,med,blip}.py``): the ViT is timm's (BLIP's is timm's, copied), the text encoder is
    med.py's BERT written out in torch (self-attention, cross-attention to every image token, feed-forward,
    post-norm; padding masked with -10000), the head its linear layers, the transform and tokenizer the
    package's."""
    import json

    import timm
    from torch.nn import functional as F
    from torchvision import transforms
    from transformers import BertTokenizer

    state = torch.load(model_folder / "ImageReward.pt", map_location="cpu")
    med = json.loads((model_folder / "med_config.json").read_text())
    width = state["blip.visual_encoder.cls_token"].shape[-1]
    patch = state["blip.visual_encoder.patch_embed.proj.weight"].shape[-1]
    side = int((state["blip.visual_encoder.pos_embed"].shape[1] - 1) ** 0.5) * patch
    depth = len({k.split(".")[3] for k in state if k.startswith("blip.visual_encoder.blocks.")})
    vit = timm.models.vision_transformer.VisionTransformer(
        img_size=side,
        patch_size=patch,
        embed_dim=width,
        depth=depth,
        num_heads=width // 64,
        qkv_bias=True,
        num_classes=0,
        global_pool="",
    ).eval()
    prefix = "blip.visual_encoder."
    vit.load_state_dict({k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)})

    tokenizer = BertTokenizer.from_pretrained(tokenizer_folder)  # init_tokenizer
    tokenizer.add_special_tokens({"bos_token": "[DEC]"})
    tokenizer.add_special_tokens({"additional_special_tokens": ["[ENC]"]})
    preprocess = transforms.Compose(
        [  # ImageReward._transform
            transforms.Resize(side, interpolation=transforms.InterpolationMode.BICUBIC),
            transforms.CenterCrop(side),
            lambda image: image.convert("RGB"),
            transforms.ToTensor(),
            transforms.Normalize((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)),
        ]
    )

    def w(name):
        return state[f"blip.text_encoder.{name}"]

    def lin(x, name):
        return F.linear(x, w(f"{name}.weight"), w(f"{name}.bias"))

    def ln(x, name):
        return F.layer_norm(x, x.shape[-1:], w(f"{name}.weight"), w(f"{name}.bias"), med["layer_norm_eps"])

    heads = med["num_attention_heads"]

    def attention(x, source, mask, name):
        def split(t):
            return t.view(t.shape[0], t.shape[1], heads, -1).permute(0, 2, 1, 3)

        q, k, v = (
            split(lin(x, f"{name}.self.query")),
            split(lin(source, f"{name}.self.key")),
            split(lin(source, f"{name}.self.value")),
        )
        scores = q @ k.transpose(-1, -2) / (q.shape[-1] ** 0.5) + mask
        context = (scores.softmax(-1) @ v).permute(0, 2, 1, 3).reshape(x.shape)
        return ln(lin(context, f"{name}.output.dense") + x, f"{name}.output.LayerNorm")

    def text_encoder(ids, attention_mask, image_embeds):
        x = (
            w("embeddings.word_embeddings.weight")[ids]
            + w("embeddings.position_embeddings.weight")[torch.arange(ids.shape[1])]
        )
        x = ln(x, "embeddings.LayerNorm")
        self_mask = (1.0 - attention_mask[:, None, None, :].float()) * -10000.0
        image_mask = torch.zeros(1, 1, 1, image_embeds.shape[1])  # image_atts: all ones
        for i in range(med["num_hidden_layers"]):
            layer = f"encoder.layer.{i}"
            x = attention(x, x, self_mask, f"{layer}.attention")
            x = attention(x, image_embeds, image_mask, f"{layer}.crossattention")
            hidden = F.gelu(lin(x, f"{layer}.intermediate.dense"))
            x = ln(lin(hidden, f"{layer}.output.dense") + x, f"{layer}.output.LayerNorm")
        return x

    def mlp(x):
        for index in (0, 2, 4, 6, 7):  # Linear, Dropout (off), ...; the ReLUs are commented out
            x = F.linear(x, state[f"mlp.layers.{index}.weight"], state[f"mlp.layers.{index}.bias"])
        return x

    scores = []
    with torch.no_grad():
        for image, prompt in zip(images, prompts):
            text_input = tokenizer(
                prompt, padding="max_length", truncation=True, max_length=35, return_tensors="pt"
            )
            image_embeds = vit.forward_features(preprocess(image).unsqueeze(0))
            text_output = text_encoder(text_input.input_ids, text_input.attention_mask, image_embeds)
            rewards = mlp(text_output[:, 0, :].float())
            scores.append(float((rewards - 0.16717362830052426) / 1.0333394966054072))
    return scores


def test_image_reward_equals_the_packages_computation(backbones):
    model_folder, tokenizer_folder = backbones.image_reward
    config = mc.ImageRewardConfig(model=str(model_folder), tokenizer=str(tokenizer_folder), batch_size=3)
    metric = METRICS["image_reward"](config)
    images = _images()
    prompts = (*PROMPTS[:3], "a yellow square, flat colours, icon, " * 6)  # the last one is cut at 35 tokens
    scores = metric.score(images, jobs_for(*prompts))["image_reward"]
    expected = image_reward_reference(model_folder, tokenizer_folder, images, prompts)
    assert scores == pytest.approx(expected, rel=1e-5, abs=1e-5)
    assert len({round(s, 4) for s in scores}) == 4
    # The prompt matters: the same image under another prompt scores differently (cross-attention path).
    swapped = metric.score(images[:1], jobs_for(PROMPTS[2]))["image_reward"]
    assert swapped[0] == pytest.approx(
        image_reward_reference(model_folder, tokenizer_folder, images[:1], PROMPTS[2:3])[0],
        rel=1e-5,
        abs=1e-5,
    )
    assert abs(swapped[0] - scores[0]) > 1e-3


def test_a_checkpoint_that_is_not_image_rewards_is_named_with_what_is_wrong(backbones, tmp_path):
    """Another BLIP-free file under ImageReward's name (HPS's open_clip weights, here re-saved as a plain
    state_dict) and a med config without its fields are format errors naming the file."""
    model_folder, tokenizer_folder = backbones.image_reward
    checkpoint, _ = backbones.hpsv2
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    torch.save(torch.load(checkpoint)["state_dict"], foreign / "ImageReward.pt")
    (foreign / "med_config.json").write_text((model_folder / "med_config.json").read_text())
    metric = METRICS["image_reward"](
        mc.ImageRewardConfig(model=str(foreign), tokenizer=str(tokenizer_folder))
    )
    with pytest.raises(
        WeightsFormatError,
        match=r"foreign/ImageReward\.pt: no blip\.visual_encoder\.cls_token; not ImageReward's BLIP",
    ):
        metric.score(squares(1), jobs_for("a"))
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "ImageReward.pt").symlink_to(model_folder / "ImageReward.pt")
    (broken / "med_config.json").write_text('{"hidden_size": 32}')
    metric = METRICS["image_reward"](mc.ImageRewardConfig(model=str(broken), tokenizer=str(tokenizer_folder)))
    with pytest.raises(
        WeightsFormatError, match=r"broken/med_config\.json: not a BLIP med config .*vocab_size"
    ):
        metric.score(squares(1), jobs_for("a"))
