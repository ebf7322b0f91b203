"""``evaluations.jsonl``: every model an evaluation scored, one line each, for resuming.

A line is written (flushed and fsynced) only once a model is completely scored, keyed by the hash of what
decides its scores (the config's prompts, sampling and metrics, the base model, dtype and device) and the
hash of the checkpoint's content. An evaluation run again with the same config skips every checkpoint
whose content it already scored, wherever the file now lies; a torn last line (a crash mid-write) is
ignored.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

from sdcallbacks.aggregation.records import ImageRecord
from sdcallbacks.config.schema import RunConfig
from sdcallbacks.evaluation.leaderboard import ScoredModel

# Fields that decide no score: where things go, what is kept, when training would stop.
NOT_SCORING = {"output_dir", "overwrite_output_dir", "schedule", "checkpoint", "early_stopping", "trackers"}


def scoring_hash(config: RunConfig, **settings: Any) -> str:
    """Hash of everything that decides the scores of a model: the config less :data:`NOT_SCORING` (prompt
    files by content) and ``settings`` (base model, dtype, mixed precision, device type)."""
    data = config.model_dump(mode="json", exclude=NOT_SCORING)
    data["prompt_files"] = [Path(p).read_text(encoding="utf-8") for p in config.prompt_files]
    data["settings"] = settings
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


class ScoredStore:
    def __init__(self, path: Path, config_hash: str):
        self.path = Path(path)
        self.config_hash = config_hash
        self.models: dict[str, ScoredModel] = {}  # content hash -> model
        if self.path.is_file():
            self._read()

    def _read(self) -> None:
        lines = self.path.read_text(encoding="utf-8").splitlines()
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                if number == len(lines):
                    continue  # torn by a crash while writing: that model is scored again
                raise ValueError(f"{self.path}:{number}: not a JSON line") from None
            if entry.get("config") == self.config_hash:
                self.models[entry["content"]] = _model(entry["model"])

    def get(self, content: str) -> ScoredModel | None:
        return self.models.get(content)

    def add(self, content: str, model: ScoredModel) -> None:
        entry = {"config": self.config_hash, "content": content, "model": asdict(model)}
        line = json.dumps(entry, default=lambda value: None)  # a value JSON cannot hold reads back as None
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(line + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        self.models[content] = model


def _model(data: dict[str, Any]) -> ScoredModel:
    data = dict(data)
    data["records"] = [ImageRecord(**r) for r in data["records"]]
    data["values"] = {k: (float("nan") if v is None else v) for k, v in data["values"].items()}
    return ScoredModel(**data)
