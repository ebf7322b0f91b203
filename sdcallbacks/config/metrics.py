"""Metric sections of the run configuration.

Every model field takes the published model id by default (fetched through the Hugging Face hub cache,
or facenet-pytorch's / torchvision's own cache) and accepts a local file or folder instead. Reference
folders hold the images a metric compares against (the subject's photos, the style images, the
training set).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, PositiveInt, field_validator

from sdcallbacks.config.base import ImageSide, Seed, StrictModel

# Fields naming where a metric's weights are (relative local paths resolve against the config's folder):
MODEL_SOURCE_FIELDS = (
    "model",
    "head",
    "processor",
    "tokenizer",
)  # a hub repo id, a local folder or the file itself
WEIGHTS_FILE_FIELDS = ("weights", "trunk_weights")  # optional: a local file instead of a library's cache


class MetricConfig(StrictModel):
    """Settings every metric has."""

    batch_size: PositiveInt = Field(16, description="Images per backbone forward pass.")
    good_threshold: float | None = Field(
        None, description="Log good_rate: the share of images at or beyond this score (in its direction)."
    )


class ClipModelConfig(StrictModel):
    """An open_clip model. OpenAI weights are run with QuickGELU, as they were trained."""

    model: str = Field(
        "ViT-L-14-quickgelu",
        description="open_clip model name, 'hf-hub:org/repo' or 'local-dir:/path' (open_clip_config.json "
        "+ weights).",
    )
    pretrained: str | None = Field(
        "openai",
        description="open_clip pretrained tag or a local weights file; ignored for local-dir/hf-hub.",
    )

    @property
    def key(self) -> str:
        return f"{self.model}:{self.pretrained}"


class ReferenceMetricConfig(MetricConfig):
    references: Path = Field(description="Folder of reference images (searched recursively).")


class SetMetricConfig(MetricConfig):
    """Settings of a metric with one value per image set (KID, CMMD, FID, Inception Score)."""

    ci_resamples: int = Field(
        100,
        ge=0,
        description="Percentile-bootstrap resamples of the validation images for <key>/ci_low and "
        "/ci_high (95%); each recomputes the metric on the resampled features. 0: no interval.",
    )


class IdentityConfig(ReferenceMetricConfig):
    """MTCNN (weights bundled with facenet-pytorch) + InceptionResnetV1 trained on VGGFace2."""

    weights: str | None = Field(
        None,
        description="20180402-114759-vggface2.pt; default: facenet-pytorch's cache "
        "($TORCH_HOME/checkpoints), downloaded there when missing.",
    )
    min_face_size: PositiveInt = 20
    detection_thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7)
    copy_threshold: float = Field(
        0.9, gt=-1.0, le=1.0, description="Warn when an image's face is this close to one reference photo."
    )


class TagAccuracyConfig(MetricConfig):
    """WD14 tagger; ``model`` is a hub repo id or a local folder holding model.onnx + selected_tags.csv."""

    model: str = "SmilingWolf/wd-v1-4-moat-tagger-v2"
    threshold: float = Field(0.35, gt=0.0, lt=1.0)
    character_threshold: float = Field(0.85, gt=0.0, lt=1.0)


class AestheticLaionConfig(MetricConfig):
    """LAION improved aesthetic predictor head on L2-normalised OpenAI CLIP ViT-L/14 image embeddings.
    A v1 linear head (``sa_0_4_vit_l_14_linear.pth``) is accepted too."""

    head: str = Field(
        "camenduru/improved-aesthetic-predictor",
        description="Hub repo holding the head file, a local folder, or the .pth file itself.",
    )
    head_filename: str = "sac+logos+ava1-l14-linearMSE.pth"
    clip: ClipModelConfig = Field(default_factory=ClipModelConfig)
    good_threshold: float | None = 6.0


class AestheticAnimeConfig(MetricConfig):
    """skytnt's anime aesthetic ONNX model (score 0..1)."""

    model: str = Field("skytnt/anime-aesthetic", description="Hub repo, local folder or model.onnx.")
    size: PositiveInt = Field(768, description="Canvas side the image is fitted into (the model's input).")
    batch_size: PositiveInt = 4


class ClipScoreConfig(MetricConfig):
    """100 x cosine(image, prompt) with CLIP, as torchmetrics' CLIPScore."""

    clip: ClipModelConfig = Field(default_factory=ClipModelConfig)


class ClipIConfig(ReferenceMetricConfig):
    """Mean cosine between an image's CLIP embedding and each reference image's (DreamBooth CLIP-I)."""

    clip: ClipModelConfig = Field(default_factory=ClipModelConfig)


class DinoConfig(ReferenceMetricConfig):
    """DreamBench's DINO: mean cosine between an image's DINO ViT-S/16 CLS embedding and each reference's."""

    model: str = Field(
        "facebook/dino-vits16",
        description="A transformers ViT or DINOv2 model: hub id (facebook/dino-vits16, facebook/dinov2-base) "
        "or a local folder with config.json and the weights.",
    )
    resize: PositiveInt = Field(256, description="Short side before the centre crop (DINO's evaluation).")
    crop: PositiveInt = Field(224, description="Centre crop side.")


class PickScoreConfig(MetricConfig):
    """PickScore v1 (Kirstain et al. 2023): CLIP-H fine-tuned on Pick-a-Pic preferences (transformers)."""

    model: str = Field(
        "yuvalkirstain/PickScore_v1",
        description="transformers CLIPModel: hub id or a local folder with config.json and the weights.",
    )
    processor: str = Field(
        "laion/CLIP-ViT-H-14-laion2B-s32B-b79K",
        description="Its CLIPProcessor (the authors use CLIP-H's): hub id or a local folder.",
    )


HPS_FILES = {"v2.1": "HPS_v2.1_compressed.pt", "v2.0": "HPS_v2_compressed.pt"}


class Hpsv2Config(MetricConfig):
    """HPS v2 / v2.1 (Wu et al. 2023): an open_clip ViT-H-14 fine-tuned on human preferences."""

    model: str = Field(
        "xswu/HPSv2",
        description="Hub repo holding HPS_v2.1_compressed.pt / HPS_v2_compressed.pt, a local folder "
        "with it, or the file itself.",
    )
    version: Literal["v2.1", "v2.0"] = "v2.1"
    architecture: str = Field(
        "ViT-H-14", description="open_clip model name, or an open_clip model config JSON file."
    )

    @property
    def filename(self) -> str:
        return HPS_FILES[self.version]


class ImageRewardConfig(MetricConfig):
    """ImageReward v1.0 (Xu et al. 2023): a BLIP ViT-L/16 image encoder, a BERT text encoder that attends
    to the image, and a linear reward head, trained on human rankings."""

    model: str = Field(
        "THUDM/ImageReward",
        description="Hub repo holding ImageReward.pt and med_config.json, or a local folder with both.",
    )
    tokenizer: str = Field(
        "google-bert/bert-base-uncased",
        description="BERT WordPiece tokenizer (ImageReward's is bert-base-uncased): hub id or a local folder "
        "with vocab.txt.",
    )


class DiversityConfig(MetricConfig):
    """DreamBooth DIV: mean pairwise LPIPS between images of the same prompt."""

    net: str = Field("alex", pattern="^(alex|vgg|squeeze)$")
    trunk_weights: str | None = Field(
        None,
        description="The torchvision trunk file (alexnet-owt-7be5be79.pth for 'alex'); default: "
        "torchvision's cache ($TORCH_HOME/hub/checkpoints), downloaded there when missing.",
    )


class DiversityClipConfig(MetricConfig):
    """Mean pairwise 1 - cosine of CLIP image embeddings between images of the same prompt."""

    clip: ClipModelConfig = Field(default_factory=ClipModelConfig)


class KidConfig(ReferenceMetricConfig, SetMetricConfig):
    """Kernel Inception Distance with torchmetrics' estimator and defaults, on CLIP image embeddings."""

    clip: ClipModelConfig = Field(default_factory=ClipModelConfig)
    subsets: PositiveInt = 100
    subset_size: PositiveInt = Field(1000, description="Capped at the smaller set's size.")
    degree: PositiveInt = 3
    gamma: float | None = None
    coef: float = 1.0
    seed: Seed = 0
    ci_resamples: int = Field(
        0,
        ge=0,
        description="As for the other set metrics, off by default: each resample runs every subset again "
        "(about 1 ms each on a CPU); kid/std is the spread over subsets.",
    )


class CmmdConfig(ReferenceMetricConfig, SetMetricConfig):
    """CMMD (Jayasumana et al. 2024): MMD with a Gaussian kernel on CLIP ViT-L/14@336 embeddings."""

    clip: ClipModelConfig = Field(
        default_factory=lambda: ClipModelConfig(model="ViT-L-14-336-quickgelu", pretrained="openai")
    )
    sigma: float = Field(10.0, gt=0)
    scale: float = Field(1000.0, gt=0)


class InceptionConfig(MetricConfig):
    weights: str | None = Field(
        None,
        description="torch-fidelity's pt_inception-2015-12-05-6726825d.pth; default: the torch hub cache, "
        "downloaded there when missing.",
    )


class FidConfig(InceptionConfig, ReferenceMetricConfig, SetMetricConfig):
    """FID through torchmetrics (torch-fidelity's Inception v3, 2048-d pool features)."""

    ci_resamples: int = Field(
        0,
        ge=0,
        description="As for the other set metrics, off by default: each resample takes a 2048-d matrix "
        "square root (seconds on a CPU).",
    )


class InceptionScoreConfig(InceptionConfig, SetMetricConfig):
    """Inception Score through torchmetrics' formula. Its authors used 50,000 images in 10 splits; a
    validation set of dozens measures little, and splitting it further measures less."""

    splits: PositiveInt = Field(
        1,
        description="Groups the images are scored in (mean and std over groups). Each group should hold "
        "many images: a group of one scores exactly 1, and a group of n at most n.",
    )


class StyleLossConfig(ReferenceMetricConfig):
    """GhostReview's VGG19 Gram-matrix style loss against the reference style images."""

    weights: str | None = Field(
        None,
        description="torchvision's vgg19-dcbb9e9d.pth; default: the torch hub cache, downloaded there "
        "when missing.",
    )
    size: tuple[PositiveInt, PositiveInt] = Field(
        (512, 512), description="(height, width) images are resized to."
    )
    batch_size: PositiveInt = 4


class CcipConfig(ReferenceMetricConfig):
    """deepghs CCIP anime character similarity against reference images of the character."""

    model: str = Field("deepghs/ccip_onnx", description="Hub repo or local folder holding <variant>/ files.")
    variant: str = "ccip-caformer-24-randaug-pruned"
    threshold: float | None = Field(None, description="Same-character threshold; default: metrics.json's.")


class ValLossConfig(StrictModel):
    """Denoising loss on held-out images at fixed timesteps (or sigmas) with fixed noise (no sampling)."""

    data: Path = Field(description="Folder of held-out images with same-stem .txt captions.")
    timesteps: list[int] = Field(
        default_factory=lambda: [200, 400, 600, 800], description="DDPM timesteps (SD, SDXL)."
    )
    sigmas: list[float] = Field(
        default_factory=lambda: [1.0, 0.75, 0.5, 0.25],
        description="Flow-matching sigmas before the scheduler's shift (SD3, Flux).",
    )
    guidance: float = Field(3.5, ge=0.0, description="Flux's distilled guidance for the loss.")
    resolution: ImageSide = 512
    batch_size: PositiveInt = 4
    seed: Seed = 0
    every_n_steps: PositiveInt | None = Field(
        None, description="Also run between validations, every this many steps."
    )

    @field_validator("timesteps")
    @classmethod
    def _timesteps(cls, values: list[int]) -> list[int]:
        if not values:
            raise ValueError("list at least one timestep")
        if any(t < 0 for t in values):
            raise ValueError("timesteps must be >= 0")
        return values

    @field_validator("sigmas")
    @classmethod
    def _sigmas(cls, values: list[float]) -> list[float]:
        if not values:
            raise ValueError("list at least one sigma")
        if any(not 0.0 < s <= 1.0 for s in values):
            raise ValueError("sigmas must be in (0, 1]")
        return values


class MetricsConfig(StrictModel):
    """Enabled metrics: a metric runs when its section is present (``{}`` takes every default)."""

    identity: IdentityConfig | None = None
    tag_accuracy: TagAccuracyConfig | None = None
    aesthetic_laion: AestheticLaionConfig | None = None
    aesthetic_anime: AestheticAnimeConfig | None = None
    clip_score: ClipScoreConfig | None = None
    clip_i: ClipIConfig | None = None
    dino: DinoConfig | None = None
    pickscore: PickScoreConfig | None = None
    hpsv2: Hpsv2Config | None = None
    image_reward: ImageRewardConfig | None = None
    diversity: DiversityConfig | None = None
    diversity_clip: DiversityClipConfig | None = None
    kid: KidConfig | None = None
    cmmd: CmmdConfig | None = None
    fid: FidConfig | None = None
    inception_score: InceptionScoreConfig | None = None
    style_loss: StyleLossConfig | None = None
    ccip: CcipConfig | None = None
    val_loss: ValLossConfig | None = None
    device: str | None = Field(None, description="Device for backbones; default: the accelerator's.")
    cache_references: bool = Field(
        True, description="Cache reference embeddings on disk, keyed by file content and model."
    )
    cache_dir: Path | None = Field(None, description="Default: ~/.cache/sdcallbacks/features.")

    def enabled(self) -> dict[str, MetricConfig]:
        """Enabled image metrics by name (``val_loss`` is not an image metric and is not included)."""
        return {
            name: value
            for name in type(self).model_fields
            if isinstance(value := getattr(self, name), MetricConfig)
        }
