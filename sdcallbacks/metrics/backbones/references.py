"""Reference embeddings: each reference folder is embedded once per run and backbone.

With a cache folder, embeddings are also stored on disk under a key made of the backbone's key and the
content hash of every reference file, so a changed, added or removed photo, or another model, gives a
new entry instead of stale features.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

from sdcallbacks.metrics.backbones.base import Backbone, Features
from sdcallbacks.metrics.images import ImageFolder

logger = logging.getLogger("sdcallbacks")


def _content_key(backbone: Backbone, folder: ImageFolder) -> str:
    digest = hashlib.sha256(backbone.key.encode())
    for path in folder.paths:
        digest.update(str(path.relative_to(folder.root)).encode())
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()[:32]


class ReferenceStore:
    def __init__(self, cache_dir: Path | None = None):
        self.cache_dir = cache_dir
        self._memory: dict[tuple[str, Path], Features] = {}
        self._folders: dict[Path, ImageFolder] = {}

    def folder(self, root: str | Path) -> ImageFolder:
        root = Path(root).expanduser().resolve()
        if root not in self._folders:
            self._folders[root] = ImageFolder.read(root)
        return self._folders[root]

    def features(self, backbone: Backbone, root: str | Path) -> Features:
        folder = self.folder(root)
        memo_key = (backbone.key, folder.root)
        if memo_key not in self._memory:
            self._memory[memo_key] = self._load_or_embed(backbone, folder)
        return self._memory[memo_key]

    def _load_or_embed(self, backbone: Backbone, folder: ImageFolder) -> Features:
        if self.cache_dir is None:
            return backbone.embed(folder.images)
        from safetensors.torch import load_file, save_file

        path = self.cache_dir / f"{_content_key(backbone, folder)}.safetensors"
        if path.is_file():
            try:
                stored = load_file(str(path))
                parts = tuple(stored[f"f{i}"] for i in range(len(stored)))
                return parts[0] if len(parts) == 1 else parts
            except Exception as err:  # a torn or foreign file: embed again
                logger.warning("sdcallbacks: ignoring unreadable feature cache %s (%s)", path, err)
        features = backbone.embed(folder.images)
        parts = features if isinstance(features, tuple) else (features,)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".tmp{id(self)}")
            save_file({f"f{i}": p.detach().cpu().contiguous() for i, p in enumerate(parts)}, str(tmp))
            tmp.replace(path)
        except OSError as err:
            logger.warning("sdcallbacks: cannot write feature cache %s (%s)", path, err)
        return features
