"""``identity``: does the generated face belong to the subject of the reference photos?

Per image, with e the InceptionResnetV1 (VGGFace2) embedding of the largest face MTCNN finds:

* ``identity`` = cos(e, c), c the centroid of the reference faces' embeddings;
* ``identity/face_rate`` = 1 if a face was found, else 0 (its mean is the share of images with a face);
* ``identity/copy`` = max cosine to any single reference face. Values near 1 mean the model reproduces
  one training photo rather than the person (memorisation); a warning is logged above
  ``copy_threshold``.

An image without a face is skipped for ``identity`` and ``identity/copy`` (counted, never scored 0).
Reference photos are embedded once per run; photos without a face are skipped with a warning, and a
folder where no photo has a face is an error.
"""

from __future__ import annotations

import logging
from typing import ClassVar

import torch

from sdcallbacks.config.metrics import IdentityConfig
from sdcallbacks.metrics.backbones.faces import FaceEmbedder
from sdcallbacks.metrics.base import ImageBatch, ImageMetric, Scores
from sdcallbacks.metrics.images import ImageFolderError
from sdcallbacks.metrics.registry import register_metric

logger = logging.getLogger("sdcallbacks")


@register_metric
class Identity(ImageMetric):
    name = "identity"
    higher_is_better = True
    config_class = IdentityConfig
    extra_keys: ClassVar[dict[str, bool]] = {"face_rate": True, "copy": False}
    config: IdentityConfig

    def load(self) -> None:
        cfg = self.config
        self.faces = self.pool.get(
            FaceEmbedder(
                cfg.weights, self.device, cfg.batch_size, cfg.min_face_size, cfg.detection_thresholds
            )
        )
        references = self.pool.references.features(self.faces, cfg.references)
        found = ~references.isnan().any(dim=1)
        folder = self.pool.references.folder(cfg.references)
        faceless = [str(p) for p, ok in zip(folder.paths, found.tolist()) if not ok]
        if not bool(found.any()):
            raise ImageFolderError(
                f"identity references: no face found in any of the {len(faceless)} images in {folder.root}"
            )
        if faceless:
            logger.warning(
                "sdcallbacks: identity: no face in %d of %d reference photos; skipped: %s",
                len(faceless),
                len(found),
                ", ".join(faceless),
            )
        self.references = references[found]
        self.centroid = self.references.mean(dim=0)

    def compute(self, batch: ImageBatch) -> Scores:
        embeddings = batch.features.get(self.faces)
        has_face = ~embeddings.isnan().any(dim=1)
        identity = torch.nn.functional.cosine_similarity(embeddings, self.centroid[None], dim=1)
        copy = (embeddings @ self.references.T).max(dim=1).values  # embeddings are unit length
        copies = int(((copy > self.config.copy_threshold) & has_face).sum())
        if copies:
            logger.warning(
                "sdcallbacks: identity: %d image(s) are closer than %.2f to a single reference photo "
                "(identity/copy); the model may be memorising training images",
                copies,
                self.config.copy_threshold,
            )
        return {
            "identity": [float(v) if ok else None for v, ok in zip(identity, has_face)],
            "identity/face_rate": [float(ok) for ok in has_face],
            "identity/copy": [float(v) if ok else None for v, ok in zip(copy, has_face)],
        }
