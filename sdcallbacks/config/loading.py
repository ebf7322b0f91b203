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

from sdcallbacks.config.metrics import MODEL_SOURCE_FIELDS, WEIGHTS_FILE_FIELDS, MetricsConfig
from sdcallbacks.config.schema import RunConfig
from sdcallbacks.weights import is_hub_id

LOCAL_DIR = "local-dir:"  # open_clip's prefix for a local model folder
WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors")

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


def read_text(path: Path) -> str:
    """A file the user wrote (config, prompt file, caption), as UTF-8 (a leading BOM is accepted). Any
    other encoding is a :class:`ConfigError` naming the file, the byte offset and its line."""
    data = Path(path).read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise ConfigError(
            path,
            [
                f"not UTF-8 text: byte 0x{data[err.start]:02x} at offset {err.start} (line {line}) cannot be "
                "decoded; save the file as UTF-8 (it looks like another encoding, e.g. Latin-1 or cp1252)"
            ],
        ) from None


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a key given twice in one mapping is an error naming both lines
    (PyYAML keeps the last value silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        first_line: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # ``<<: *anchor`` merges are meant to be overridden
            key = self.construct_object(key_node, deep=True)
            try:
                seen = first_line.get(key)
            except TypeError:
                continue  # an unhashable key: PyYAML's own error follows
            line = key_node.start_mark.line + 1
            if seen is not None:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}: first on line {seen}, again on line {line}"
                )
            first_line[key] = line
        return super().construct_mapping(node, deep)


def _unique_json_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``json.loads``' object hook: a key given twice in one object is an error (JSON keeps the last)."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r} in one JSON object")
        out[key] = value
    return out


def parse_structured(path: Path, suffixes: tuple[str, ...] = (".yaml", ".yml", ".json", ".toml")) -> Any:
    """The data of a YAML, JSON or TOML file, by extension; errors name the file (and line)."""
    suffix = path.suffix.lower()
    if suffix not in suffixes:
        raise ConfigError(path, [f"unknown extension {suffix!r}: expected {', '.join(suffixes)}"])
    text = read_text(path)
    try:
        if suffix in (".yaml", ".yml"):
            return yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader subclass
        if suffix == ".json":
            return json.loads(text, object_pairs_hook=_unique_json_object)
        return tomllib.loads(text)  # TOML itself forbids duplicate keys
    except (yaml.YAMLError, ValueError, tomllib.TOMLDecodeError) as err:  # JSONDecodeError is a ValueError
        raise ConfigError(path, [f"cannot parse: {err}"]) from err


def read_mapping(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(path, ["file not found"])
    data = parse_structured(path)
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
    """Relative local paths of metric sections resolve against ``base`` (the config file's folder): reference
    folders and data, and model, head and weights files given as local paths (hub ids stay as they are)."""
    for name in type(metrics).model_fields:
        section = getattr(metrics, name)
        if not isinstance(section, BaseModel):
            continue
        for field in ("references", "data"):
            value = getattr(section, field, None)
            if isinstance(value, Path) and not value.is_absolute():
                setattr(section, field, base / value)
        for field in (*MODEL_SOURCE_FIELDS, *WEIGHTS_FILE_FIELDS):
            value = getattr(section, field, None)
            if isinstance(value, str):
                setattr(section, field, _local_against(value, base))
        clip = getattr(section, "clip", None)
        if isinstance(clip, BaseModel):
            if clip.model.startswith(LOCAL_DIR):
                clip.model = LOCAL_DIR + _local_against(clip.model[len(LOCAL_DIR) :], base)
            if clip.pretrained and Path(clip.pretrained).suffix in WEIGHT_SUFFIXES:
                clip.pretrained = _local_against(clip.pretrained, base)


def _local_against(value: str, base: Path) -> str:
    """``value`` under ``base`` if it is a relative local path there (a hub id ``org/name`` stays)."""
    path = Path(value)
    if path.is_absolute() or value.startswith("~") or "://" in value:
        return value
    if (base / path).exists():
        return str(base / path)
    if path.exists():  # relative to the working directory, as before config-relative paths
        return value
    return value if is_hub_id(value) else str(base / path)


def load_config(path: str | Path) -> RunConfig:
    """Load and validate a config file; raises :class:`ConfigError` naming the file and keys."""
    path = Path(path)
    return validate_config(read_mapping(path), path)
