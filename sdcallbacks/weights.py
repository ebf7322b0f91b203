"""Locating evaluator weights: a local file or folder, else the Hugging Face hub cache.

Defaults are the published model ids; any of them can be replaced by a local path. When a file is
neither local nor obtainable from the hub (offline, no cache), :class:`WeightsNotFoundError` names the
file, where it was looked for and how to get it. Nothing ever falls back to random weights.
"""

from __future__ import annotations

import os
from pathlib import Path


class WeightsNotFoundError(FileNotFoundError):
    def __init__(
        self, filename: str, source: str, reason: str, looked_in: str | None = None, fix: str | None = None
    ):
        self.filename = filename
        self.source = source
        looked_in = looked_in or (
            f"the local path {source!r}, then the Hugging Face hub cache (repo {source!r})"
        )
        fix = fix or (
            f"download it once with `huggingface-cli download {source} {filename}` on a machine with "
            f"network access, or point the config at a local folder or file that holds {filename!r}"
        )
        self.message = (
            f"cannot find {filename!r} for {source!r}: {reason}.\n  Looked in: {looked_in}.\n  Fix: {fix}."
        )
        super().__init__(self.message)

    def __str__(self) -> str:  # OSError would format its constructor arguments as errno/strerror
        return self.message


def resolve_file(source: str | Path, filename: str) -> Path:
    """``filename`` inside local folder ``source``, ``source`` itself if it is that file, or from the hub."""
    path = Path(source).expanduser()
    if path.is_file():
        # The file itself: the one asked for, or one of the same kind under another name (a renamed head).
        if path.name == filename or filename == "" or path.suffix == Path(filename).suffix:
            return path
        sibling = path.parent / filename
        if sibling.is_file():
            return sibling
        raise WeightsNotFoundError(filename, str(source), f"{sibling} does not exist")
    if path.is_dir():
        candidate = path / filename
        if candidate.is_file():
            return candidate
        raise WeightsNotFoundError(filename, str(source), f"the folder {path} has no {filename}")
    if path.is_absolute() or str(source).startswith((".", "~")) or str(source).count("/") != 1:
        raise WeightsNotFoundError(filename, str(source), "no such local file or folder")
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        return Path(hf_hub_download(str(source), filename))
    except LocalEntryNotFoundError as err:
        raise WeightsNotFoundError(
            filename, str(source), "not in the hub cache and the hub is unreachable"
        ) from err
    except (HfHubHTTPError, OSError) as err:
        raise WeightsNotFoundError(
            filename, str(source), f"hub download failed ({type(err).__name__}: {err})"
        ) from err


CACHE_ENV = "SDCALLBACKS_CACHE"


def default_cache_dir() -> Path:
    """sdcallbacks' own cache (tiny world, reference features): ``$SDCALLBACKS_CACHE`` or
    ``$XDG_CACHE_HOME/sdcallbacks``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")).expanduser() / "sdcallbacks"


def hub_offline() -> bool:
    """True when the user asked for no downloads (``HF_HUB_OFFLINE`` or ``SDCALLBACKS_OFFLINE``)."""
    return any(
        os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")
        for name in ("HF_HUB_OFFLINE", "SDCALLBACKS_OFFLINE")
    )


def torch_home() -> Path:
    """``$TORCH_HOME``, defaulting to ``$XDG_CACHE_HOME/torch`` (torch's and facenet-pytorch's rule)."""
    default = Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")) / "torch"
    return Path(os.environ.get("TORCH_HOME", default)).expanduser()


def resolve_url_file(override: str | Path | None, url: str, cache_dir: Path, what: str) -> Path:
    """Weights published at ``url`` and cached by their library in ``cache_dir`` (torchvision's hub
    cache, facenet-pytorch's checkpoints folder): the ``override`` file if given, else the cached file,
    else downloaded into that cache unless offline."""
    filename = url.rsplit("/", 1)[-1]
    if override is not None:
        path = Path(override).expanduser()
        if path.is_file():
            return path
        raise WeightsNotFoundError(
            filename,
            what,
            f"{path} does not exist",
            looked_in=str(path),
            fix=f"point the config at the {filename} file (published at {url})",
        )
    cached = cache_dir / filename
    if cached.is_file():
        return cached
    fix = f"download {url} into {cache_dir} on a machine with network access, or set the weights path"
    if hub_offline():
        raise WeightsNotFoundError(filename, what, "not cached and downloads are off", str(cache_dir), fix)
    import torch

    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(url, str(cached), progress=False)
    except Exception as err:
        raise WeightsNotFoundError(
            filename, what, f"download failed ({type(err).__name__}: {err})", str(cache_dir), fix
        ) from err
    return cached
