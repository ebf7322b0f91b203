"""Read a config file (YAML, JSON or TOML by extension) into a validated :class:`RunConfig`."""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from sdcallbacks.config.metrics import MetricsConfig
from sdcallbacks.config.schema import RunConfig

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


class ConfigError(ValueError):
    """A config problem located by file and key path. The CLI exits with code 2 on it."""

    def __init__(self, path: Path | str | None, problems: list[str]):
        self.path = Path(path) if path is not None else None
        self.problems = problems
        where = str(self.path) if self.path is not None else "<config>"
        super().__init__(f"{where}: invalid configuration\n" + "\n".join(f"  {p}" for p in problems))


_ENV_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def expand_env(data: Any, path: Path | None = None, key: str = "") -> Any:
    """Replace ``${NAME}`` in every string with the environment variable ``NAME`` (an unset one is an
    error naming the key), so a config can point at per-machine folders."""
    if isinstance(data, dict):
        return {k: expand_env(v, path, f"{key}.{k}" if key else str(k)) for k, v in data.items()}
    if isinstance(data, list):
        return [expand_env(v, path, f"{key}.{i}") for i, v in enumerate(data)]
    if not isinstance(data, str):
        return data

    def value(match: re.Match) -> str:
        name = match.group(1)
        if name not in os.environ:
            raise ConfigError(path, [f"{key}: ${{{name}}} is used but the environment variable is not set"])
        return os.environ[name]

    return _ENV_VAR.sub(value, data)


def read_mapping(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(path, ["file not found"])
    text = path.read_text(encoding="utf-8")
    suffix = path.suffix.lower()
    try:
        if suffix in (".yaml", ".yml"):
            data = yaml.safe_load(text)
        elif suffix == ".json":
            data = json.loads(text)
        elif suffix == ".toml":
            data = tomllib.loads(text)
        else:
            raise ConfigError(path, [f"unknown extension {suffix!r}: expected .yaml, .yml, .json or .toml"])
    except (yaml.YAMLError, json.JSONDecodeError, tomllib.TOMLDecodeError) as err:
        raise ConfigError(path, [f"cannot parse: {err}"]) from err
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(path, [f"top level must be a mapping, got {type(data).__name__}"])
    return expand_env(data, path)


def format_validation_error(err: ValidationError) -> list[str]:
    """One line per problem: dotted key path, pydantic's message and the offending input."""
    lines = []
    for item in err.errors():
        key = ".".join(str(part) for part in item["loc"]) or "<root>"
        got = item.get("input")
        shown = "" if isinstance(got, dict) else f" (got {got!r})"
        lines.append(f"{key}: {item['msg']}{shown}")
    return lines


def validate_config(data: dict[str, Any], path: Path | None = None) -> RunConfig:
    """Validate ``data``; relative paths in it resolve against the config file's folder."""
    try:
        config = RunConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(path, format_validation_error(err)) from None
    if path is not None:
        config._source = path
        base = path.resolve().parent
        config.prompt_files = [p if p.is_absolute() else base / p for p in config.prompt_files]
        resolve_metric_paths(config.metrics, base)
    return config


def resolve_metric_paths(metrics: MetricsConfig, base: Path) -> None:
    """Relative reference folders and data paths of metric sections resolve against ``base``."""
    for name in type(metrics).model_fields:
        section = getattr(metrics, name)
        if not isinstance(section, BaseModel):
            continue
        for field in ("references", "data"):
            value = getattr(section, field, None)
            if isinstance(value, Path) and not value.is_absolute():
                setattr(section, field, base / value)


def load_config(path: str | Path) -> RunConfig:
    """Load and validate a config file; raises :class:`ConfigError` naming the file and keys."""
    path = Path(path)
    return validate_config(read_mapping(path), path)
