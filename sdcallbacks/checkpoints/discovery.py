"""Finding the checkpoints a trainer saved, and the training step (or epoch) of each.

A source given on the command line is a checkpoint itself (a LoRA ``.safetensors`` file, a LoRA folder, a
full denoiser folder), a folder of checkpoints (a trainer's output folder), or a glob of either. What each
trainer writes, as read from its source:

* diffusers' scripts: ``checkpoint-<step>/`` (``pytorch_lora_weights.safetensors`` inside);
* sdcallbacks: ``step_<step>/`` (the callback's ``checkpoints/``);
* kohya sd-scripts and its GUIs: ``<name>-step<step:08d>.safetensors`` (``--save_every_n_steps``) and
  ``<name>-<epoch:06d>.safetensors`` (``--save_every_n_epochs``); the file's ``ss_steps``/``ss_epoch``
  metadata, when present, gives both;
* ai-toolkit: ``<name>_<step:09d>.safetensors``;
* OneTrainer: ``<prefix><timestamp>-save-<step>-<epoch>-<epoch step>.safetensors``;
* ``epoch-3``, ``epoch_3``: an epoch.

``step_pattern`` (``--step-pattern``) replaces the name rules: a regular expression searched in the name
(without extension) whose group ``step`` (or ``epoch``, or else group 1 as the step) is the number.
"""

from __future__ import annotations

import glob
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

LORA_FILE = "pytorch_lora_weights.safetensors"
DENOISER_FOLDERS = ("unet", "transformer")
WEIGHT_SUFFIXES = (".safetensors",)

# (pattern, what its groups are): the first that matches a name wins.
NAME_RULES: list[tuple[re.Pattern[str], tuple[str, ...]]] = [
    (re.compile(r"(?:^|[-_])checkpoint-(\d+)$"), ("step",)),
    (re.compile(r"-save-(\d+)-(\d+)-\d+$"), ("step", "epoch")),
    (re.compile(r"(?:^|[-_])step[-_]?(\d+)$"), ("step",)),
    (re.compile(r"(?:^|[-_])epoch[-_]?(\d+)$"), ("epoch",)),
    (re.compile(r"_(\d+)$"), ("step",)),
    (re.compile(r"-(\d+)$"), ("epoch",)),
]


class CheckpointError(ValueError):
    """A source that cannot be read as checkpoints; the message names the path and what was expected."""


@dataclass(frozen=True)
class Checkpoint:
    """One saved checkpoint: where it is, what it holds, and when in training it was saved."""

    path: Path  # the file or folder as found
    kind: Literal["lora", "denoiser"]
    step: int | None = None
    epoch: int | None = None
    named: bool = True  # the position came from the name (else from metadata alone: kohya's final save)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def position(self) -> int:
        """The step, or the epoch where the trainer only numbers epochs: the x axis of its validations."""
        return self.step if self.step is not None else self.epoch  # type: ignore[return-value]

    @property
    def unit(self) -> str:
        """What ``position`` counts: ``step`` or ``epoch``."""
        return "step" if self.step is not None else "epoch"

    @property
    def weights(self) -> list[Path]:
        """The files whose content identifies the checkpoint (hashed for resuming)."""
        if self.path.is_file():
            return [self.path]
        if self.kind == "lora":
            return [self.path / LORA_FILE]
        folder = self._denoiser_folder()
        return sorted(folder.glob("*.safetensors")) + sorted(folder.glob("config.json"))

    def _denoiser_folder(self) -> Path:
        for name in DENOISER_FOLDERS:
            if (self.path / name / "config.json").is_file():
                return self.path / name
        return self.path


@dataclass
class Discovery:
    """The checkpoints found, in training order, and what was passed over with the reason."""

    checkpoints: list[Checkpoint] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)


def parse_position(stem: str, step_pattern: str | None = None) -> tuple[int | None, int | None]:
    """(step, epoch) from a checkpoint's name without extension; (None, None) when nothing matches."""
    if step_pattern is not None:
        match = re.search(step_pattern, stem)
        if match is None:
            return None, None
        groups = match.groupdict()
        if groups.get("step") is not None or groups.get("epoch") is not None:
            step, epoch = groups.get("step"), groups.get("epoch")
            return (int(step) if step else None), (int(epoch) if epoch else None)
        return int(match.group(1)), None
    for pattern, names in NAME_RULES:
        match = pattern.search(stem)
        if match is not None:
            found = dict(zip(names, map(int, match.groups())))
            return found.get("step"), found.get("epoch")
    return None, None


def safetensors_header(path: Path) -> dict:
    """A safetensors file's header: tensor names and shapes, and ``__metadata__`` (kohya's ``ss_*`` keys),
    read without loading any tensor. A file that is not safetensors is a :class:`CheckpointError`."""
    try:
        with open(path, "rb") as handle:
            size = int.from_bytes(handle.read(8), "little")
            if not 2 <= size <= 100_000_000:
                raise ValueError(f"header size {size}")
            header = json.loads(handle.read(size))
    except (OSError, ValueError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path}: not a readable safetensors file ({err})") from err
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: not a safetensors file (its header is not a JSON object)")
    return header


def _is_lora(header: dict) -> bool:
    return any("lora" in key for key in header if key != "__metadata__")


def _kind_of_folder(folder: Path) -> Literal["lora", "denoiser"] | None:
    if (folder / LORA_FILE).is_file():
        return "lora"
    has_weights = any(folder.glob("diffusion_pytorch_model*.safetensors"))
    if (has_weights and (folder / "config.json").is_file()) or any(
        (folder / name / "config.json").is_file() for name in DENOISER_FOLDERS
    ):
        return "denoiser"
    return None


def checkpoint_at(path: Path, step_pattern: str | None = None) -> Checkpoint | str:
    """The checkpoint at ``path``, or why it is not one."""
    if path.is_dir():
        kind = _kind_of_folder(path)
        if kind is None:
            return f"a folder with neither {LORA_FILE} nor diffusion_pytorch_model*.safetensors"
        step, epoch = parse_position(path.name, step_pattern)
        header = _header_or_reason(path / LORA_FILE) if kind == "lora" else {}
    elif path.suffix in WEIGHT_SUFFIXES:
        header = _header_or_reason(path)
        kind = "lora" if isinstance(header, dict) and _is_lora(header) else "denoiser"
        step, epoch = parse_position(path.stem, step_pattern)
    else:
        return f"not a checkpoint (expected a {'/'.join(WEIGHT_SUFFIXES)} file or a checkpoint folder)"
    if isinstance(header, str):
        return header
    metadata = header.get("__metadata__") or {}
    named = step is not None or epoch is not None
    if step_pattern is None:  # kohya's metadata is exact where names are only an epoch
        step = _int(metadata.get("ss_steps"), step)
        epoch = _int(metadata.get("ss_epoch"), epoch)
    if step is None and epoch is None:
        rule = f'--step-pattern "{step_pattern}"' if step_pattern else "the trainers' names"
        return f"no step or epoch in its name ({rule}) or metadata; name one with --step-pattern"
    return Checkpoint(path, kind, step, epoch, named)


def _header_or_reason(path: Path) -> dict | str:
    try:
        return safetensors_header(path)
    except CheckpointError as err:
        return str(err).removeprefix(f"{path}: ")


def path_state(path: Path) -> tuple[tuple[str, int, int], ...]:
    """(relative name, size, mtime) of a file, or of every file under a folder: what a trainer still
    writing changes. Read with ``stat`` only, never the content."""
    path = Path(path)
    try:
        if path.is_file():
            stat = path.stat()
            return (("", stat.st_size, stat.st_mtime_ns),)
        files = sorted(p for p in path.rglob("*") if p.is_file())
        return tuple((str(f.relative_to(path)), f.stat().st_size, f.stat().st_mtime_ns) for f in files)
    except OSError:  # removed while listed: unstable
        return ()


def _int(value: str | None, default: int | None) -> int | None:
    try:
        return int(value) if value not in (None, "") else default
    except ValueError:
        return default


def _expand(source: str) -> list[Path]:
    if any(ch in source for ch in "*?["):
        return sorted(Path(p) for p in glob.glob(source))
    return [Path(source)]


def find_checkpoints(sources: list[str | Path], step_pattern: str | None = None) -> Discovery:
    """Every checkpoint in ``sources`` (checkpoints, folders of checkpoints, globs), in training order.

    Raises :class:`CheckpointError` for a source that matches nothing, a ``step_pattern`` that matches no
    name, or two checkpoints at the same position (two runs mixed). Entries of a folder that are not
    checkpoints (logs, sample images, a trainer's state folders) are passed over and listed in ``skipped``.
    """
    if step_pattern is not None:
        try:
            re.compile(step_pattern)
        except re.error as err:
            raise CheckpointError(
                f"--step-pattern {step_pattern!r} is not a regular expression: {err}"
            ) from err
    found = Discovery()
    for source in map(str, sources):
        paths = _expand(source)
        if not paths or not paths[0].exists():
            raise CheckpointError(f"{source}: no such file or folder (or a glob that matches nothing)")
        for path in paths:
            own = checkpoint_at(path, step_pattern) if path.is_file() or _kind_of_folder(path) else None
            if isinstance(own, Checkpoint):
                found.checkpoints.append(own)
            elif own is not None:
                found.skipped.append((path, own))
            else:  # a folder of checkpoints
                for entry in sorted(path.iterdir()):
                    result = checkpoint_at(entry, step_pattern)
                    if isinstance(result, Checkpoint):
                        found.checkpoints.append(result)
                    else:
                        found.skipped.append((entry, result))
    if not found.checkpoints:
        reasons = "; ".join(f"{p.name}: {why}" for p, why in found.skipped[:5])
        raise CheckpointError(
            f"no checkpoint found in {', '.join(map(str, sources))}" + (f" ({reasons})" if reasons else "")
        )
    by_position: dict[int, Checkpoint] = {}
    for checkpoint in sorted(found.checkpoints, key=lambda c: not c.named):  # named ones first
        other = by_position.setdefault(checkpoint.position, checkpoint)
        if other is checkpoint:
            continue
        if other.named and not checkpoint.named:  # kohya's final file, saved at a step a named one has
            found.skipped.append((checkpoint.path, f"at the same {checkpoint.unit} as {other.name}"))
            continue
        raise CheckpointError(
            f"{other.path} and {checkpoint.path} are both at {checkpoint.unit} {checkpoint.position}: "
            "evaluate one run at a time, or tell them apart with --step-pattern"
        )
    found.checkpoints = sorted(by_position.values(), key=lambda c: c.position)
    return found
