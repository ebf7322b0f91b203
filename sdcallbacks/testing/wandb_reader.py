"""Reads an offline W&B run back from its ``run-<id>.wandb`` file (the only record an offline run keeps).

The file is a LevelDB-style log: a 7-byte header (``:W&B``, uint16 0xBEE1, version 0), then 32 KiB blocks
of records, each with a 7-byte little-endian header (crc32, uint16 length, uint8 type: 1 full, 2 first,
3 middle, 4 last fragment); block tails shorter than a header are padding. Each joined payload is a
protobuf ``Record`` from ``wandb.proto.wandb_internal_pb2``. Written against wandb 0.31.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BLOCK = 32 * 1024
HEADER = 7


@dataclass
class OfflineRun:
    history: list[dict[str, Any]] = field(default_factory=list)  # one dict per logged row
    summary: dict[str, Any] = field(default_factory=dict)
    metrics: list[Any] = field(default_factory=list)  # define_metric records
    artifacts: list[Any] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)


def _payloads(data: bytes) -> Iterator[bytes]:
    if data[:4] != b":W&B":
        raise ValueError("not a .wandb file (missing :W&B header)")
    position, pending = HEADER, b""
    while position + HEADER <= len(data):
        left_in_block = BLOCK - position % BLOCK
        if left_in_block < HEADER:
            position += left_in_block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[position : position + HEADER])
        chunk = data[position + HEADER : position + HEADER + length]
        position += HEADER + length
        if kind == 1:
            yield chunk
        elif kind == 2:
            pending = chunk
        elif kind == 3:
            pending += chunk
        elif kind == 4:
            yield pending + chunk
            pending = b""


def _key(item: Any) -> str:
    return item.key or "/".join(item.nested_key)


def read_offline_run(path: Path | str) -> OfflineRun:
    from wandb.proto import wandb_internal_pb2

    run = OfflineRun()
    for payload in _payloads(Path(path).read_bytes()):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(payload)
        kind = record.WhichOneof("record_type")
        if kind == "history":
            run.history.append({_key(i): json.loads(i.value_json) for i in record.history.item})
        elif kind == "summary":
            for item in record.summary.update:
                run.summary[_key(item)] = json.loads(item.value_json)
            for item in record.summary.remove:
                run.summary.pop(_key(item), None)
        elif kind == "metric":
            run.metrics.append(record.metric)
        elif kind == "artifact":
            run.artifacts.append(record.artifact)
        elif kind in ("run", "config"):
            config = record.run.config if kind == "run" else record.config
            for item in config.update:
                run.config[_key(item)] = json.loads(item.value_json)
    return run


def find_run_file(wandb_dir: Path | str) -> Path:
    """The ``.wandb`` file of the single offline run under ``wandb_dir``."""
    files = sorted(Path(wandb_dir).rglob("offline-run-*/run-*.wandb"))
    if len(files) != 1:
        raise FileNotFoundError(f"expected one offline run under {wandb_dir}, found {len(files)}")
    return files[0]
