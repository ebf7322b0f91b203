"""Face embeddings: MTCNN (largest face) + InceptionResnetV1 trained on VGGFace2 (facenet-pytorch).

MTCNN runs with facenet-pytorch's defaults (160 px crop, no margin, ``select_largest``, post-processing
to (x - 127.5) / 128) and its weights bundled in the wheel. Images are passed as PIL RGB (numpy input
needs OpenCV). InceptionResnetV1 returns L2-normalised 512-d embeddings, so a cosine is a dot product.
An image without a detected face gets a row of NaN. The vggface2 weights are facenet-pytorch's file,
looked up where facenet-pytorch caches it ($TORCH_HOME/checkpoints) and loaded with ``weights_only``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from PIL import Image

from sdcallbacks.metrics.backbones.base import Backbone
from sdcallbacks.metrics.images import drop_alpha
from sdcallbacks.weights import load_state_dict_file, resolve_url_file, torch_home

VGGFACE2_URL = (
    "https://github.com/timesler/facenet-pytorch/releases/download/v2.2.9/20180402-114759-vggface2.pt"
)
VGGFACE2_CLASSES = 8631
EMBED_DIM = 512


class FaceEmbedder(Backbone):
    def __init__(
        self,
        weights: str | None = None,
        device: str = "cpu",
        batch_size: int = 16,
        min_face_size: int = 20,
        thresholds: Sequence[float] = (0.6, 0.7, 0.7),
    ):
        super().__init__(device, batch_size)
        self.weights = weights
        self.min_face_size = min_face_size
        self.thresholds = list(thresholds)

    @property
    def key(self) -> str:
        return f"facenet:{self.weights or 'vggface2'}:{self.min_face_size}:{self.thresholds}"

    def load(self) -> None:
        from facenet_pytorch import MTCNN, InceptionResnetV1

        path = resolve_url_file(
            self.weights, VGGFACE2_URL, torch_home() / "checkpoints", "InceptionResnetV1 (vggface2)"
        )
        self.detector = MTCNN(
            image_size=160,
            margin=0,
            min_face_size=self.min_face_size,
            thresholds=self.thresholds,
            select_largest=True,
            post_process=True,
            device=self.device,
        )
        # The published file holds the 8631-class logits too: load it whole, then drop the classifier.
        net = InceptionResnetV1(pretrained=None, classify=True, num_classes=VGGFACE2_CLASSES)
        net.load_state_dict(load_state_dict_file(path))
        net.classify = False
        self.net = net.eval().to(self.device)

    def detect(self, image: Image.Image) -> torch.Tensor | None:
        """The largest face as a (3, 160, 160) post-processed crop, or None when there is none."""
        return self.detector(drop_alpha(image))

    def forward(self, images: Sequence[Image.Image]) -> torch.Tensor:
        out = torch.full((len(images), EMBED_DIM), float("nan"))
        crops = [self.detect(image) for image in images]
        found = [i for i, crop in enumerate(crops) if crop is not None]
        if found:
            batch = torch.stack([crops[i] for i in found]).to(self.device)
            out[found] = self.net(batch).float().cpu()
        return out
