"""LPIPS (``lpips`` 0.1.4, v0.1 linear heads shipped in the wheel) split into a per-image feature pass and a
pairwise distance, so n images cost n trunk passes instead of one per pair.

The distance is ``lpips.LPIPS.forward`` term for term: inputs in [-1, 1], the scaling layer, unit-normalised
trunk features, squared differences through the linear heads, spatial average, sum over layers. The wheel
has only the heads; the trunk is torchvision's file (``alexnet-owt-7be5be79.pth`` for ``alex``), looked up
in torchvision's cache or a configured path, never randomly initialised.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from sdcallbacks.metrics.backbones.base import Backbone
from sdcallbacks.metrics.images import drop_alpha
from sdcallbacks.weights import load_state_dict_file, resolve_url_file, torch_home

TRUNK_URLS = {
    "alex": "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
    "vgg": "https://download.pytorch.org/models/vgg16-397923af.pth",
    "squeeze": "https://download.pytorch.org/models/squeezenet1_1-b8a52dc0.pth",
}


def load_trunk(model, path) -> None:
    """Torchvision ``features.<i>.*`` weights into lpips' ``net.slice<k>.<i>.*`` modules."""
    state = load_state_dict_file(path)
    target = {}
    for name in model.net.state_dict():
        _, index, param = name.split(".", 2)
        source = f"features.{index}.{param}"
        if source not in state:
            raise ValueError(f"{path}: missing {source}; expected a torchvision state_dict for this trunk")
        target[name] = state[source]
    model.net.load_state_dict(target)


def image_tensor(image: Image.Image) -> torch.Tensor:
    """(3, H, W) in [-1, 1], LPIPS' input range."""
    array = np.asarray(drop_alpha(image), dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(array).permute(2, 0, 1)


class LPIPSNet(Backbone):
    def __init__(
        self, net: str = "alex", trunk_weights: str | None = None, device: str = "cpu", batch_size: int = 16
    ):
        super().__init__(device, batch_size)
        self.net = net
        self.trunk_weights = trunk_weights

    @property
    def key(self) -> str:
        return f"lpips:{self.net}:{self.trunk_weights or 'torchvision'}"

    def load(self) -> None:
        import warnings

        import lpips
        from lpips.lpips import spatial_average

        path = resolve_url_file(
            self.trunk_weights,
            TRUNK_URLS[self.net],
            torch_home() / "hub" / "checkpoints",
            f"LPIPS {self.net}",
        )
        with warnings.catch_warnings():  # lpips passes torchvision's deprecated ``pretrained=False``
            warnings.simplefilter("ignore", UserWarning)
            model = lpips.LPIPS(net=self.net, version="0.1", pnet_rand=True, verbose=False)
        load_trunk(model, path)
        self.model = model.eval().to(self.device)
        self._normalize = lpips.normalize_tensor
        self._spatial_average = spatial_average

    def forward(self, images: Sequence[Image.Image]) -> tuple[torch.Tensor, ...]:
        x = torch.stack([image_tensor(im) for im in images]).to(self.device)
        return tuple(self._normalize(f) for f in self.model.net.forward(self.model.scaling_layer(x)))

    @torch.inference_mode()
    def distances(self, features: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """(N, N) symmetric matrix of LPIPS distances between the images the features came from."""
        n = features[0].shape[0]
        out = torch.zeros(n, n)
        for i in range(n):
            for j in range(i + 1, n):
                d = sum(
                    self._spatial_average(lin((f[i : i + 1] - f[j : j + 1]) ** 2), keepdim=False)
                    for lin, f in zip(self.model.lins, features)
                )
                out[i, j] = out[j, i] = float(d.reshape(-1)[0])
        return out
