"""Locating evaluator weights: a local file or folder, else the Hugging Face hub cache.

Defaults are the published model ids; any of them can be replaced by a local path. When a file is
neither local nor obtainable from the hub (offline, no cache), :class:`WeightsNotFoundError` names the
file, where it was looked for and how to get it. Nothing ever falls back to random weights.
"""

from __future__ import annotations

from pathlib import Path


class WeightsNotFoundError(FileNotFoundError):
    def __init__(self, filename: str, source: str, reason: str):
        self.filename = filename
        self.source = source
        self.message = (
            f"cannot find {filename!r} for {source!r}: {reason}.\n"
            f"  Looked in: the local path {source!r}, then the Hugging Face hub cache (repo {source!r}).\n"
            f"  Fix: download it once with `huggingface-cli download {source} {filename}` on a machine with "
            f"network access, or point the config at a local folder or file that holds {filename!r}."
        )
        super().__init__(self.message)

    def __str__(self) -> str:  # OSError would format its constructor arguments as errno/strerror
        return self.message


def resolve_file(source: str | Path, filename: str) -> Path:
    """``filename`` inside local folder ``source``, ``source`` itself if it is that file, or from the hub."""
    path = Path(source).expanduser()
    if path.is_file():
        if path.name == filename or filename == "":
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
