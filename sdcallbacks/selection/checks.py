"""Checks of a run config as a whole, before training starts (``from_config`` and ``check-config``).

Pydantic validates each field on its own; these need the files and the metrics: every path of the metric
sections (:mod:`sdcallbacks.metrics.checks`), a ``monitor`` (or a key of a gate, an event or the Pareto
front) that no enabled metric logs, event prompts that do not exist, ``score`` weights
for metrics that are not enabled (or that have no per-image spread to standardise), and output folders that
cannot be written. Each problem names its key, so the error reads like the other config errors.
"""

from __future__ import annotations

import os
from pathlib import Path

from sdcallbacks.aggregation.keys import expected_keys
from sdcallbacks.config.loading import ConfigError
from sdcallbacks.config.schema import RunConfig
from sdcallbacks.metrics.base import Metric, SetMetric
from sdcallbacks.metrics.checks import metric_path_problems
from sdcallbacks.metrics.loss import ValidationLoss
from sdcallbacks.prompts.library import load_prompts
from sdcallbacks.sampling.variants import planned_variants


def _unwritable(path: Path) -> str | None:
    """Why ``path`` (a folder, maybe not there yet) cannot be written, without creating anything."""
    path = Path(path).absolute()
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is not a folder"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"no write permission on {existing}"
    return None


def _higher_is_better(config: RunConfig, metric: Metric, key: str) -> bool:
    term = config.score_terms()[key]
    return term.mode == "max" if term.mode else metric.key_specs()[key].higher_is_better


def config_problems(config: RunConfig, metrics: list[Metric]) -> list[str]:
    problems = metric_path_problems(config.metrics)
    by_key = {key: metric for metric in metrics for key in metric.output_keys()}
    for key in config.score:
        metric = by_key.get(key)
        if metric is None:
            problems.append(
                f"score.{key}: no enabled metric logs {key!r}; enabled metric keys: {sorted(by_key)}"
            )
        elif isinstance(metric, SetMetric):
            problems.append(
                f"score.{key}: {key!r} is one value per validation (no per-image spread to standardise "
                "against); monitor it directly instead"
            )
        elif config.score_combine == "fbeta" and not _higher_is_better(config, metric, key):
            problems.append(
                f"score.{key}: score_combine fbeta takes scores in [0, 1] where higher is better; "
                f"{key!r} is lower-is-better"
            )
    names = [p.name for p in load_prompts(config)]
    loss = config.metrics.val_loss
    loss_keys = ValidationLoss(loss).output_keys() if loss is not None else []
    variants = planned_variants(config.sampling.ema, lora_scales=config.sampling.lora_scales)
    keys = expected_keys(metrics, names, variants, loss_keys, list(config.score))
    spread = ("std", "n", "skipped", "ci_low", "ci_high")
    main = [k for k in keys if "/prompt/" not in k and k.rsplit("/", 1)[-1] not in spread]
    logged = (
        f"keys a validation logs: {main} (and <key>/std, /n, /skipped, /ci_low, /ci_high, /prompt/<name>)"
    )
    wanted = {"monitor": config.monitor} if config.monitor is not None else {}
    wanted.update({f"gates[{i}]": rule.key for i, rule in enumerate(config.gate_rules())})
    wanted.update({f"events.{name}": rule.key for name, rule in config.events.items()})
    wanted.update({f"pareto.keys.{key}": key for key in (config.pareto.keys if config.pareto else {})})
    for where, key in wanted.items():
        if key not in keys:
            problems.append(f"{where}: no enabled metric logs {key!r}; {logged}")
    for name, rule in config.events.items():
        unknown = [p for p in rule.prompts or [] if p not in names]
        if unknown:
            problems.append(f"events.{name}.prompts: {unknown} are not prompt names: {names}")
    folders = {"output_dir": config.output_dir}
    if config.monitor is not None and config.checkpoint.enabled:
        folders["checkpoint.dirpath"] = config.checkpoint.dirpath or config.output_dir / "checkpoints"
    for key, folder in folders.items():
        why = _unwritable(folder)
        if why:
            problems.append(f"{key}: cannot write to {folder}: {why}")
    return problems


def check_config(config: RunConfig, metrics: list[Metric]) -> None:
    """Raise a :class:`ConfigError` naming the config file and keys, listing everything that is wrong."""
    problems = config_problems(config, metrics)
    if problems:
        raise ConfigError(config.source, problems)
