"""Locating backbone weights: a local file or folder, else the Hugging Face hub cache.

Defaults are the published model ids; any of them can be replaced by a local path. When a file is
neither local nor obtainable from the hub (offline, no cache), :class:`WeightsNotFoundError` names the
file, where it was looked for and how to get it. Nothing ever falls back to random weights.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


class WeightsNotFoundError(FileNotFoundError):
    def __init__(
        self, filename: str, source: str, reason: str, looked_in: str | None = None, fix: str | None = None
    ):
        self.filename = filename
        self.source = source
        self.reason = reason
        looked_in = looked_in or (
            f"the local path {source!r}, then the Hugging Face hub cache (repo {source!r})"
        )
        fix = fix or (
            f"download it once with `hf download {source} {filename}` (the command huggingface_hub "
            f"installs) on a machine with network access, or point the config at a local folder or file "
            f"that holds {filename!r}"
        )
        self.message = (
            f"cannot find {filename!r} for {source!r}: {reason}.\n  Looked in: {looked_in}.\n  Fix: {fix}."
        )
        super().__init__(self.message)

    def __str__(self) -> str:  # OSError would format its constructor arguments as errno/strerror
        return self.message


class WeightsFormatError(ValueError):
    """A weights file that is not what it should be (not a plain state_dict, foreign keys)."""


def is_hub_id(source: str | Path) -> bool:
    """Whether ``source`` names a hub repository (``org/name``) rather than a local file or folder."""
    text = str(source)
    path = Path(text).expanduser()
    return not (path.exists() or path.is_absolute() or text.startswith((".", "~")) or text.count("/") != 1)


def resolve_local_file(source: str | Path, filename: str) -> Path:
    """``filename`` inside local folder ``source``, or ``source`` itself if it is that file."""
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
    raise WeightsNotFoundError(filename, str(source), "no such local file or folder")


def resolve_file(source: str | Path, filename: str) -> Path:
    """``filename`` inside local folder ``source``, ``source`` itself if it is that file, or from the hub."""
    if not is_hub_id(source):
        return resolve_local_file(source, filename)
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


def load_state_dict_file(path: Path) -> dict:
    """A plain state_dict (tensors under string keys) from a torch file, loaded with ``weights_only`` so
    that nothing in the file is executed. Anything else is a :class:`WeightsFormatError` naming the file."""
    import pickle
    import re

    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        # torch's own message suggests weights_only=False, i.e. running the file's code: never advise it.
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
        what = f" (it refers to {found.group(1)})" if found else ""
        raise WeightsFormatError(
            f"{path}: not a plain state_dict{what}; the file holds Python objects besides tensors, and "
            "sdcallbacks only loads plain weights. Re-save it as a state_dict (or .safetensors) of tensors, "
            "or use the published file"
        ) from None
    except (RuntimeError, EOFError, OSError) as err:
        raise WeightsFormatError(f"{path}: not a readable torch weights file ({err})") from None
    if not isinstance(state, dict):
        raise WeightsFormatError(
            f"{path}: expected a state_dict (a mapping of tensors), got {type(state).__name__}"
        )
    return state


CACHE_ENV = "SDCALLBACKS_CACHE"


def default_cache_dir() -> Path:
    """sdcallbacks' own cache (tiny world, reference features): ``$SDCALLBACKS_CACHE`` or
    ``$XDG_CACHE_HOME/sdcallbacks``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")).expanduser() / "sdcallbacks"


def from_pretrained(loader: Any, source: str, filename: str, **kwargs: Any) -> Any:
    """``loader.from_pretrained(source)`` (a transformers class: model, config, processor, tokenizer),
    without downloads when :func:`hub_offline`; a source it cannot load is a :class:`WeightsNotFoundError`
    naming ``filename``, the file that says what the folder is."""
    try:
        return loader.from_pretrained(source, local_files_only=hub_offline(), **kwargs)
    except OSError as err:
        reason = "not in the hub cache and downloads are off" if is_hub_id(source) else f"not loadable: {err}"
        raise WeightsNotFoundError(filename, source, reason) from None


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
