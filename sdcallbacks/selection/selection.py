"""One decision per validation: the monitored value goes to the checkpoint keeper and to early stopping.

Decisions are made once, on the main process, from a finished
:class:`~sdcallbacks.validation.ValidationResult` (its first variant; a baseline validation decides
nothing); with several processes the execution strategy broadcasts the :class:`Decision` and this
object's state, so every process acts on the same one.

A validation that did not log the monitored key (its metric failed, or every image was skipped) is an
error listing the keys it did log when ``early_stopping.strict`` is on (the default; Lightning's
``strict``), and otherwise a warning with no check: patience is not counted for it.

Before the monitored value is looked at, the validation meets the ``gates`` (:mod:`.gates`: a validation
failing one never becomes best or enters the top k), the overfitting ``events`` are checked
(:mod:`.events`: one named in ``early_stopping.on_events`` stops training) and an eligible validation is
offered to the ``pareto`` front (:mod:`.pareto`). Relative gates and events read the baseline validation,
which passes through :meth:`Selection.decide` first and is kept (also for resume).

With ``sampling.best_of_scales`` the monitored value is the best of the monitored key at scale 1.0 and at
each of ``sampling.lora_scales`` (``val/scale_<s>/...``; ties go to the earlier, 1.0 first); the scale
is logged (``val/lora_scale/best``), kept per step, written beside a kept checkpoint's weights
(``lora_scale.json``) and reported as ``best/lora_scale``.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sdcallbacks.aggregation.keys import variant_prefix
from sdcallbacks.config.schema import RunConfig
from sdcallbacks.prompts.library import load_prompts
from sdcallbacks.sampling.modules import TrainingModules
from sdcallbacks.sampling.variants import scale_variant
from sdcallbacks.selection.checkpoint import ModelCheckpoint
from sdcallbacks.selection.early_stopping import EarlyStopping, StoppingReason
from sdcallbacks.selection.events import Fired, OverfittingEvents
from sdcallbacks.selection.gates import Gates
from sdcallbacks.selection.pareto import ParetoFront
from sdcallbacks.selection.snapshots import WeightsWriter, load_weights
from sdcallbacks.validation.result import ValidationResult

logger = logging.getLogger("sdcallbacks")


@dataclass(frozen=True)
class Decision:
    stop: bool = False
    new_best: bool = False
    best_model_path: str | None = None
    stopping_reason: str = StoppingReason.NOT_STOPPED.value
    ineligible: tuple[str, ...] = ()  # the gates this validation failed
    fired: tuple[Fired, ...] = ()  # events that held for the first time
    scalars: dict[str, float] = field(default_factory=dict)  # val/gates/..., val/events/..., val/pareto/...


class MonitorMissingError(RuntimeError):
    """The validation did not log the monitored key."""


class Selection:
    """``monitor`` and ``mode`` shared by a :class:`ModelCheckpoint` and an :class:`EarlyStopping`."""

    def __init__(self, config: RunConfig):
        self.monitor = config.monitor
        self.mode = config.mode
        ck, es = config.checkpoint, config.early_stopping
        self.checkpoint = (
            ModelCheckpoint(
                ck.dirpath or config.output_dir / "checkpoints",
                self.monitor,
                self.mode,
                save_top_k=ck.save_top_k,
                save_last=ck.save_last,
            )
            if self.monitor is not None and ck.enabled
            else None
        )
        self.early_stopping = (
            EarlyStopping(
                self.monitor,
                self.mode,
                es.patience,
                es.min_delta,
                es.stopping_threshold,
                es.divergence_threshold,
                es.check_finite,
            )
            if es is not None and self.monitor is not None
            else None
        )
        self.strict = es.strict if es is not None else True
        self.restore_best_at_end = es.restore_best_at_end if es is not None else False
        self.on_events = list(es.on_events) if es is not None else []
        self.check_ineligible = es.check_ineligible if es is not None else True
        self.gates = Gates(config.gate_rules())
        self.events = OverfittingEvents(config.events, load_prompts(config) if config.events else [])
        pareto_dir = (ck.dirpath or config.output_dir / "checkpoints") / "pareto" if ck.enabled else None
        self.pareto = ParetoFront(config.pareto.keys, pareto_dir) if config.pareto else None
        self.baseline: dict[str, float] | None = None  # the baseline validation's values
        sampling = config.sampling
        self.scales = [1.0, *sampling.lora_scales] if sampling.best_of_scales else []
        self.scale_at: dict[int, float] = {}  # step -> the LoRA scale its monitored value came from
        self.monitored: list[tuple[int, float]] = []  # (step, monitored value) of each decision

    def set_baseline(self, values: dict[str, float]) -> None:
        """The base model's values, which relative gates and events compare with."""
        self.baseline = dict(values)

    def decide(self, result: ValidationResult, weights: TrainingModules | WeightsWriter) -> Decision:
        """Keep ``weights`` if ``result`` is eligible and among the best, and say whether to stop."""
        if result.baseline and result.variants:
            self.set_baseline(result.variants[0].values)
        monitored = result.monitored
        if monitored is None:
            return Decision()
        step, values = result.step, monitored.values
        ineligible = tuple(self.gates.failures(values, self.baseline))
        scalars, fired = self.events.check(step, values, self.baseline)
        if self.gates.rules:
            scalars["val/gates/eligible"] = 0.0 if ineligible else 1.0
            if ineligible:
                logger.warning(
                    "sdcallbacks: step %d is not eligible for best: %s", step, "; ".join(ineligible)
                )
        for event in fired:
            logger.warning("sdcallbacks: event %r at step %d: %s", event.name, step, event.description)
        if self.pareto is not None:
            if not ineligible:
                self.pareto.update(step, values, weights)
            scalars.update(self.pareto.scalars(step))
        checked = Decision(ineligible=ineligible, fired=tuple(fired), scalars=scalars)
        if self.monitor is None:
            return checked
        if self.monitor not in values:
            message = f"monitor {self.monitor!r} was not logged at step {step}; logged keys: {sorted(values)}"
            if self.strict:
                raise MonitorMissingError(message)
            logger.warning("sdcallbacks: %s (early_stopping.strict is off: no check this time)", message)
            return checked
        score = float(values[self.monitor])
        if self.scales:
            score, scale = self._best_of_scales(score, result.values)
            self.scale_at[step] = scale
            scalars["val/lora_scale/best"] = scale
        self.monitored.append((step, score))
        new_best = False
        if self.checkpoint is not None:
            new_best = self.checkpoint.update(score, step, weights, eligible=not ineligible)
            self._record_scale(step)
            if new_best:
                logger.info(
                    "sdcallbacks: new best %s = %.6g at step %d -> %s",
                    self.monitor,
                    score,
                    step,
                    self.checkpoint.best_model_path,
                )
        es = self.early_stopping
        stop = es is not None and (self.check_ineligible or not ineligible) and es.check(score)
        stopping_event = next((e for e in fired if e.name in self.on_events), None)
        if es is not None and not stop and stopping_event is not None:
            stop = es.stop_on_event(stopping_event.name, stopping_event.description)
        if stop:
            logger.warning(
                "sdcallbacks: early stop at step %d: %s", step, self.early_stopping.stopping_message
            )
        return Decision(
            stop=stop,
            new_best=new_best,
            best_model_path=self.best_model_path,
            stopping_reason=self.stopping_reason,
            ineligible=ineligible,
            fired=tuple(fired),
            scalars=scalars,
        )

    def _best_of_scales(self, at_one: float, values: dict[str, float]) -> tuple[float, float]:
        assert self.monitor is not None
        best, best_scale = at_one, 1.0
        for scale in self.scales[1:]:
            value = values.get(self.monitor.replace("val/", variant_prefix(scale_variant(scale)) + "/", 1))
            if value is None or not math.isfinite(value):
                continue
            if not math.isfinite(best) or (value > best if self.mode == "max" else value < best):
                best, best_scale = float(value), scale
        return best, best_scale

    def _record_scale(self, step: int) -> None:
        """``lora_scale.json`` beside the weights of a kept checkpoint of ``step``."""
        if not self.scales or self.checkpoint is None:
            return
        for path, kept in self.checkpoint.steps.items():
            if kept == step and path in self.checkpoint.best_k_models:
                record = {"step": step, "lora_scale": self.scale_at[step], "monitor": self.monitor}
                (Path(path) / "lora_scale.json").write_text(json.dumps(record) + "\n", encoding="utf-8")

    @property
    def best_model_path(self) -> str | None:
        return self.checkpoint.best_model_path if self.checkpoint else None

    @property
    def best_model_score(self) -> float | None:
        return self.checkpoint.best_model_score if self.checkpoint else None

    @property
    def best_step(self) -> int | None:
        return self.checkpoint.best_step if self.checkpoint else None

    @property
    def stopping_reason(self) -> str:
        es = self.early_stopping
        return es.stopping_reason.value if es else StoppingReason.NOT_STOPPED.value

    def summary(self) -> dict[str, Any]:
        """Run-summary values: ``best/<monitor>``, ``best/step``, ``best/path``, ``early_stop/reason``; the
        step of each event that fired (``events/<name>/step``) and the Pareto front's steps."""
        out: dict[str, Any] = {"early_stop/reason": self.stopping_reason}
        if self.best_model_score is not None:
            out[f"best/{self.monitor}"] = self.best_model_score
            out["best/step"] = self.best_step
            out["best/path"] = self.best_model_path
        if self.scales and self.best_step in self.scale_at:
            out["best/lora_scale"] = self.scale_at[self.best_step]
        out.update(self.events.summary())
        if self.pareto is not None:
            out.update(self.pareto.summary())
        return out

    def restore_best(self, modules: TrainingModules, path: str | None = None) -> str | None:
        """Load the best checkpoint into ``modules`` when ``restore_best_at_end`` is set; its path or None."""
        path = path or self.best_model_path
        if not self.restore_best_at_end or path is None:
            return None
        load_weights(modules, path)
        logger.info("sdcallbacks: restored the best weights (step %s) from %s", self.best_step, path)
        return path

    def state_dict(self) -> dict[str, Any]:
        return {
            "checkpoint": self.checkpoint.state_dict() if self.checkpoint else None,
            "early_stopping": self.early_stopping.state_dict() if self.early_stopping else None,
            "monitored": list(self.monitored),
            "baseline": self.baseline,
            "scale_at": {str(step): scale for step, scale in self.scale_at.items()},
            "events": self.events.state_dict(),
            "pareto": self.pareto.state_dict() if self.pareto else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.checkpoint and state.get("checkpoint"):
            self.checkpoint.load_state_dict(state["checkpoint"])
        if self.early_stopping and state.get("early_stopping"):
            self.early_stopping.load_state_dict(state["early_stopping"])
        monitored = state.get("monitored", state.get("history", []))  # "history" before 0.1's renames
        self.monitored = [tuple(item) for item in monitored]
        if state.get("baseline") is not None:
            self.baseline = dict(state["baseline"])
        self.scale_at = {int(step): float(scale) for step, scale in (state.get("scale_at") or {}).items()}
        self.events.load_state_dict(state.get("events") or {})
        if self.pareto and state.get("pareto"):
            self.pareto.load_state_dict(state["pareto"])
