"""VGG19 Gram matrices as GhostReview's style loss computes them (REFERENCE §1.11).

Images are squashed to ``size`` (PIL bilinear, torchvision ``Resize``), ImageNet-normalised, and run
through ``vgg19().features[:29]``. GhostReview records indices 0, 5, 10, 19, 28 (conv1_1 ... conv5_1), but
the in-place ReLU that follows each of the first four overwrites the recorded tensor, so what it really
uses are the ReLU outputs at indices 1, 6, 11, 20 and the raw conv output at 28. We take exactly those.
Gram G = F Fᵀ with F the (C, H·W) feature map, not normalised.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from PIL import Image

from sdcallbacks.metrics.backbones.base import Backbone
from sdcallbacks.metrics.images import drop_alpha
from sdcallbacks.weights import load_state_dict_file, resolve_url_file, torch_home

VGG19_URL = "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth"
STYLE_POINTS = (1, 6, 11, 20, 28)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def load_vgg19_features(path, depth: int = STYLE_POINTS[-1] + 1) -> torch.nn.Sequential:
    """``vgg19().features[:depth]`` with the ``features.*`` weights of a torchvision VGG19 file."""
    from torchvision.models import vgg19

    features = vgg19(weights=None).features[:depth]
    state = load_state_dict_file(path)
    wanted = {k.removeprefix("features."): v for k, v in state.items() if k.startswith("features.")}
    wanted = {k: v for k, v in wanted.items() if int(k.split(".")[0]) < depth}
    missing = sorted(set(features.state_dict()) - set(wanted))
    if missing:
        raise ValueError(
            f"{path}: not a torchvision VGG19 state_dict; missing features.{missing[0]} and more"
        )
    features.load_state_dict(wanted)
    return features


def gram(features: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) → (N, C, C), unnormalised."""
    flat = features.flatten(2)
    return flat @ flat.transpose(1, 2)


class VGGGram(Backbone):
    def __init__(
        self,
        weights: str | None = None,
        size: tuple[int, int] = (512, 512),
        device: str = "cpu",
        batch_size: int = 4,
    ):
        super().__init__(device, batch_size)
        self.weights = weights
        self.size = tuple(size)

    @property
    def key(self) -> str:
        return f"vgg19-gram:{self.weights or 'torchvision'}:{self.size[0]}x{self.size[1]}"

    def load(self) -> None:
        from torchvision import transforms

        path = resolve_url_file(self.weights, VGG19_URL, torch_home() / "hub" / "checkpoints", "VGG19")
        self.features = load_vgg19_features(path).eval().to(self.device)
        for module in self.features:
            if isinstance(module, torch.nn.ReLU):
                module.inplace = False
        self.transform = transforms.Compose(
            [
                transforms.Resize(self.size),
                transforms.ToTensor(),
                transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
            ]
        )

    def forward(self, images: Sequence[Image.Image]) -> tuple[torch.Tensor, ...]:
        x = torch.stack([self.transform(drop_alpha(im)) for im in images]).to(self.device)
        grams = []
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in STYLE_POINTS:
                grams.append(gram(x).float().cpu())
        return tuple(grams)
