"""Tiny backbone files in the published formats, for the loaders of the real models.

* ``clip/``: an open_clip ``local-dir`` folder (``open_clip_config.json`` + ``open_clip_model.safetensors``),
  the format of open_clip's hub repos, with QuickGELU like OpenAI's CLIP.
* ``laion_head.pth``: a LAION improved-aesthetic-predictor head state_dict (keys ``layers.{0,2,4,6,7}``),
  sized for the tiny CLIP's embedding.
* ``facenet/20180402-114759-vggface2.pt``: an InceptionResnetV1 state_dict with the vggface2 logits
  (8631 classes), the file facenet-pytorch downloads; random weights, real layout.
* ``dino/``: a transformers ViT folder as ``facebook/dino-vits16`` (``write_dino``; DINOv2 alike).
* ``hpsv2/``: ``HPS_v2.1_compressed.pt`` as ``xswu/HPSv2`` publishes it (``{"state_dict": ...}`` of a whole
  open_clip model) for a tiny architecture given as an open_clip model config JSON (``write_hpsv2``).
* ``image_reward/``: ``ImageReward.pt`` + ``med_config.json`` as ``THUDM/ImageReward`` and a BERT
  ``vocab.txt`` folder (``write_image_reward``).
* ``pickscore/``: a transformers ``CLIPModel`` folder as ``yuvalkirstain/PickScore_v1`` and a
  ``CLIPProcessor`` folder as CLIP-H's, with CLIP's real BPE vocabulary (``write_pickscore``).
"""

from __future__ import annotations

import itertools
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
    return write_open_clip(folder, TINY_CLIP_CONFIG, seed)


def write_open_clip(folder: Path, model_cfg: dict, seed: int = 0) -> Path:
    """An open_clip ``local-dir`` folder for ``model_cfg`` (e.g. ``open_clip.get_model_config("ViT-B-16")``
    for the benchmarks' mid-size model) with random weights."""
    import open_clip
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = open_clip.CLIP(**model_cfg)
    config = {
        "model_cfg": model_cfg,
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


# -- ONNX backbones: tiny graphs with the published input/output names and layouts ----------------


def _save_onnx(nodes, inputs, outputs, initializers, path: Path) -> Path:
    import onnx
    from onnx import helper

    graph = helper.make_graph(nodes, path.stem, inputs, outputs, initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def _tensor(name: str, array) -> object:
    import numpy as np
    from onnx import numpy_helper

    return numpy_helper.from_array(np.asarray(array, dtype=np.float32), name)


def write_anime_aesthetic(folder: Path, seed: int = 0) -> Path:
    """``model.onnx``: input ``img`` (N, 3, H, W) → (N, 1) in 0..1, a sigmoid of weighted channel means."""
    import numpy as np
    from onnx import TensorProto, helper

    rng = np.random.default_rng(seed)
    nodes = [
        helper.make_node("ReduceMean", ["img"], ["pooled"], axes=[2, 3], keepdims=0),
        helper.make_node("MatMul", ["pooled", "w"], ["logit"]),
        helper.make_node("Sigmoid", ["logit"], ["score"]),
    ]
    return _save_onnx(
        nodes,
        [helper.make_tensor_value_info("img", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["N", 1])],
        [_tensor("w", rng.normal(0, 3, (3, 1)))],
        folder / "model.onnx",
    )


def _tensor_i64(name: str, values) -> object:
    import numpy as np
    from onnx import numpy_helper

    return numpy_helper.from_array(np.asarray(values, dtype=np.int64), name)


CCIP_DIM = 768


def write_ccip(folder: Path, variant: str = "ccip-caformer-24-randaug-pruned", seed: int = 0) -> Path:
    """``<variant>/model_feat.onnx`` (input ``input`` (N, 3, H, W) → ``output`` (N, 768): pooled colours and a
    coarse layout through a random projection), ``model_metrics.onnx`` ((N, 768) → (N, N) Euclidean
    distances of unit features, halved) and ``metrics.json`` with a threshold."""
    import numpy as np
    from onnx import TensorProto, helper

    rng = np.random.default_rng(seed)
    root = folder / variant
    feat_nodes = [
        helper.make_node("AveragePool", ["input"], ["cells"], kernel_shape=[96, 96], strides=[96, 96]),
        helper.make_node("Flatten", ["cells"], ["flat"], axis=1),
        helper.make_node("MatMul", ["flat", "w"], ["output"]),
    ]
    _save_onnx(
        feat_nodes,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 384, 384])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", CCIP_DIM])],
        [_tensor("w", rng.normal(0, 1, (3 * 4 * 4, CCIP_DIM)))],
        root / "model_feat.onnx",
    )
    metric_nodes = [
        helper.make_node("LpNormalization", ["input"], ["unit"], axis=1, p=2),
        helper.make_node("Mul", ["unit", "unit"], ["sq"]),
        helper.make_node("ReduceSum", ["sq", "one"], ["norms"], keepdims=1),
        helper.make_node("Transpose", ["unit"], ["unit_t"], perm=[1, 0]),
        helper.make_node("MatMul", ["unit", "unit_t"], ["gram"]),
        helper.make_node("Transpose", ["norms"], ["norms_t"], perm=[1, 0]),
        helper.make_node("Add", ["norms", "norms_t"], ["sum"]),
        helper.make_node("Mul", ["gram", "two"], ["gram2"]),
        helper.make_node("Sub", ["sum", "gram2"], ["d2"]),
        helper.make_node("Relu", ["d2"], ["d2pos"]),
        helper.make_node("Sqrt", ["d2pos"], ["d"]),
        helper.make_node("Mul", ["d", "half"], ["output"]),
    ]
    _save_onnx(
        metric_nodes,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", CCIP_DIM])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", "N"])],
        [_tensor_i64("one", [1]), _tensor("two", 2.0), _tensor("half", 0.5)],
        root / "model_metrics.onnx",
    )
    (root / "metrics.json").write_text(json.dumps({"threshold": 0.17847511429108218}), encoding="utf-8")
    return folder


# -- torchvision-format trunks (random weights, real layouts; features only, to keep files small) ----


def write_torchvision_features(path: Path, arch: str, seed: int = 0) -> Path:
    """A torchvision ``<arch>`` state_dict holding its ``features.*`` weights (the part the VGG style loss
    and LPIPS use; the classifier would add hundreds of MB)."""
    import torchvision

    torch.manual_seed(seed)
    features = getattr(torchvision.models, arch)(weights=None).features
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({f"features.{k}": v for k, v in features.state_dict().items()}, path)
    return path


def write_inception(path: Path, seed: int = 0, logit_scale: float = 12.0) -> Path:
    """torch-fidelity's Inception v3 state_dict layout with random weights whose features tell images apart.

    With PyTorch's default initialisation the activations shrink layer by layer and every image ends up
    with nearly the same features (FID about 0, IS exactly 1: tests of them would prove nothing). So the
    convolutions get He (Kaiming) initialisation, the batch norms are calibrated on a few random images
    (their running statistics become those images' batch statistics), and the classifier is scaled so
    that logits are confident (``logit_scale`` times a unit-variance projection).
    """
    from unittest import mock

    from torch import nn
    from torch_fidelity import feature_extractor_inceptionv3 as fidelity

    torch.manual_seed(seed)
    # The constructor insists on loading published weights; let it load nothing, then save what it built.
    with (
        mock.patch.object(fidelity, "load_state_dict_from_url", lambda *a, **k: {}),
        mock.patch.object(fidelity.FeatureExtractorInceptionV3, "load_state_dict", lambda self, sd: None),
    ):
        net = fidelity.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    for module in net.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
        elif isinstance(module, nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None  # a cumulative average over the calibration batch
    nn.init.normal_(net.fc.weight, std=logit_scale / net.fc.in_features**0.5)
    nn.init.zeros_(net.fc.bias)
    generator = torch.Generator().manual_seed(seed)
    blocks = torch.randint(0, 256, (8, 3, 4, 4), generator=generator, dtype=torch.uint8)
    calibration = torch.nn.functional.interpolate(blocks.float(), size=64, mode="nearest").to(torch.uint8)
    net.train()
    with torch.no_grad():
        net(calibration)
    net.eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), path)
    return path


TINY_VIT = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}
VIT_S = {"hidden_size": 384, "num_hidden_layers": 12, "num_attention_heads": 6, "intermediate_size": 1536}


def write_dino(folder: Path, kind: str = "vit", seed: int = 0, shape: dict | None = None) -> Path:
    """A transformers DINO model folder as ``facebook/dino-vits16`` (``kind="vit"``, a ``ViTModel`` with no
    pooler, as the published checkpoint) or ``facebook/dinov2-base`` (``"dinov2"``) publish it:
    ``config.json`` + ``model.safetensors`` + ``preprocessor_config.json``; random weights, tiny unless
    ``shape`` says otherwise (``VIT_S``: ViT-S/16's)."""
    from transformers import Dinov2Config, Dinov2Model, ViTConfig, ViTImageProcessor, ViTModel

    torch.manual_seed(seed)
    shape = shape or TINY_VIT
    if kind == "vit":
        model = ViTModel(ViTConfig(image_size=224, patch_size=16, **shape), add_pooling_layer=False)
    else:
        model = Dinov2Model(Dinov2Config(image_size=518, patch_size=14, **shape))
    model.save_pretrained(folder)
    ViTImageProcessor(size={"height": 224, "width": 224}).save_pretrained(folder)
    return folder


def write_hpsv2(folder: Path, seed: int = 0, model_cfg: dict | None = None) -> tuple[Path, Path]:
    """(the checkpoint, the architecture's model config JSON ``tiny-hps.json``): an open_clip model (tiny
    unless ``model_cfg`` is given) in HPS's checkpoint format, ``torch.save({"state_dict": ...})``, plain
    GELU as ViT-H-14."""
    import open_clip

    folder.mkdir(parents=True, exist_ok=True)
    model_cfg = {**(model_cfg or TINY_CLIP_CONFIG), "quick_gelu": False}
    architecture = folder / "tiny-hps.json"
    architecture.write_text(json.dumps(model_cfg, indent=2), encoding="utf-8")
    torch.manual_seed(seed)
    model = open_clip.CLIP(**model_cfg)
    checkpoint = folder / "HPS_v2.1_compressed.pt"
    torch.save({"state_dict": model.state_dict()}, checkpoint)
    return checkpoint, architecture


def write_pickscore(folder: Path, seed: int = 0, mid_size: bool = False) -> tuple[Path, Path]:
    """(model folder, processor folder): a transformers ``CLIPModel`` saved as PickScore_v1 is
    (``config.json`` + ``model.safetensors``), tiny, or CLIP ViT-B/32's size with ``mid_size``, and a
    ``CLIPProcessor`` as CLIP-H's (short side resized, centre crop, OpenAI mean/std; CLIP's BPE tokenizer)."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    from sdcallbacks.testing.tokenizer import build_clip_tokenizer

    torch.manual_seed(seed)
    shape = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2}
    side = 224 if mid_size else 32
    config = (
        CLIPConfig(projection_dim=512)  # transformers' defaults: openai/clip-vit-base-patch32's shape
        if mid_size
        else CLIPConfig(
            text_config={**shape, "max_position_embeddings": 77, "projection_dim": 24},
            vision_config={**shape, "image_size": 32, "patch_size": 8, "projection_dim": 24},
            projection_dim=24,
        )
    )
    model_folder, processor_folder = folder / "model", folder / "processor"
    CLIPModel(config).save_pretrained(model_folder)
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": side},
        crop_size={"height": side, "width": side},
        image_mean=list(OPENAI_MEAN),
        image_std=list(OPENAI_STD),
    )
    tokenizer = build_clip_tokenizer(folder / "tokenizer")
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(processor_folder)
    return model_folder, processor_folder


TINY_IMAGE_REWARD = {"width": 128, "depth": 2, "patch": 8, "grid": 4, "hidden": 32, "layers": 2, "heads": 2}


def write_image_reward(folder: Path, seed: int = 0, shape: dict | None = None) -> tuple[Path, Path]:
    """(model folder, tokenizer folder): ``ImageReward.pt`` as ``THUDM/ImageReward`` publishes it (the
    state_dict of the package's ``ImageReward`` module: ``blip.visual_encoder.*`` in BLIP's timm-style ViT
    layout, ``blip.text_encoder.*`` in BLIP's ``med.py`` BERT layout with cross-attention, BLIP's unused
    projections, ``mlp.layers.{0,2,4,6,7}``) beside its ``med_config.json``, tiny (ViT width 128 = two
    64-wide heads), random; and a ``bert-base-uncased``-style ``vocab.txt`` folder.

    The tensors are written from the layout itself, not from a model class, so the loader under test
    meets the names and shapes of the published file."""
    from sdcallbacks.testing.tokenizer import write_bert_vocab

    s = {**TINY_IMAGE_REWARD, **(shape or {})}
    model_folder, tokenizer_folder = folder / "model", write_bert_vocab(folder / "tokenizer")
    model_folder.mkdir(parents=True, exist_ok=True)
    vocab_size = len((tokenizer_folder / "vocab.txt").read_text(encoding="utf-8").split("\n")) - 1 + 2
    width, hidden, positions = s["width"], s["hidden"], 40
    generator = torch.Generator().manual_seed(seed)

    def rand(*size: int, std: float = 0.05) -> torch.Tensor:
        return torch.randn(*size, generator=generator) * std

    def norm(prefix: str, size: int) -> dict[str, torch.Tensor]:
        return {f"{prefix}.weight": 1 + rand(size, std=0.1), f"{prefix}.bias": rand(size, std=0.1)}

    def linear(prefix: str, out_features: int, in_features: int, std: float = 0.05) -> dict:
        return {
            f"{prefix}.weight": rand(out_features, in_features, std=std),
            f"{prefix}.bias": rand(out_features),
        }

    v = "blip.visual_encoder"
    state = {
        f"{v}.cls_token": rand(1, 1, width, std=0.5),
        f"{v}.pos_embed": rand(1, s["grid"] ** 2 + 1, width, std=0.5),
        f"{v}.patch_embed.proj.weight": rand(width, 3, s["patch"], s["patch"]),
        f"{v}.patch_embed.proj.bias": rand(width),
    }
    for i in range(s["depth"]):
        b = f"{v}.blocks.{i}"
        state |= norm(f"{b}.norm1", width) | linear(f"{b}.attn.qkv", 3 * width, width)
        state |= linear(f"{b}.attn.proj", width, width) | norm(f"{b}.norm2", width)
        state |= linear(f"{b}.mlp.fc1", 4 * width, width) | linear(f"{b}.mlp.fc2", width, 4 * width)
    state |= norm(f"{v}.norm", width)
    t = "blip.text_encoder"
    state |= {
        f"{t}.embeddings.position_ids": torch.arange(positions).expand((1, -1)).clone(),
        f"{t}.embeddings.word_embeddings.weight": rand(vocab_size, hidden, std=0.5),
        f"{t}.embeddings.position_embeddings.weight": rand(positions, hidden, std=0.5),
    } | norm(f"{t}.embeddings.LayerNorm", hidden)
    for i in range(s["layers"]):
        layer = f"{t}.encoder.layer.{i}"
        for part, source_width in (("attention", hidden), ("crossattention", width)):
            state |= linear(f"{layer}.{part}.self.query", hidden, hidden, std=0.3)
            state |= linear(f"{layer}.{part}.self.key", hidden, source_width, std=0.3)
            state |= linear(f"{layer}.{part}.self.value", hidden, source_width)
            state |= linear(f"{layer}.{part}.output.dense", hidden, hidden) | norm(
                f"{layer}.{part}.output.LayerNorm", hidden
            )
        state |= linear(f"{layer}.intermediate.dense", 2 * hidden, hidden)
        state |= linear(f"{layer}.output.dense", hidden, 2 * hidden) | norm(
            f"{layer}.output.LayerNorm", hidden
        )
    state |= linear("blip.vision_proj", 16, width) | linear("blip.text_proj", 16, hidden)
    head = (hidden, 64, 32, 16, 8, 1)
    for index, (in_features, out_features) in zip((0, 2, 4, 6, 7), itertools.pairwise(head)):
        state |= linear(f"mlp.layers.{index}", out_features, in_features, std=0.3)
    torch.save(state, model_folder / "ImageReward.pt")
    med_config = {
        "architectures": ["BertModel"],
        "attention_probs_dropout_prob": 0.1,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "hidden_size": hidden,
        "initializer_range": 0.02,
        "intermediate_size": 2 * hidden,
        "layer_norm_eps": 1e-12,
        "max_position_embeddings": positions,
        "model_type": "bert",
        "num_attention_heads": s["heads"],
        "num_hidden_layers": s["layers"],
        "pad_token_id": 0,
        "type_vocab_size": 2,
        "vocab_size": vocab_size,
        "encoder_width": hidden,  # as published: BLIP_Pretrain overwrites it with the ViT's width
        "add_cross_attention": True,
    }
    (model_folder / "med_config.json").write_text(json.dumps(med_config, indent=2), encoding="utf-8")
    return model_folder, tokenizer_folder
