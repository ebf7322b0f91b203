"""One decision per validation: the monitored value goes to the checkpoint keeper and to early stopping.

Decisions are made once, on the main process, from a finished
:class:`~sdcallbacks.validation.ValidationResult` (its first variant; a baseline validation decides
nothing); with several processes the execution strategy broadcasts the :class:`Decision` and this
object's state, so every process acts on the same one.

A validation that did not log the monitored key (its metric failed, or every image was skipped) is an
error listing the keys it did log when ``early_stopping.strict`` is on (the default; Lightning's
``strict``), and otherwise a warning with no check: patience is not counted for it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from sdcallbacks.config.schema import RunConfig
from sdcallbacks.sampling.modules import TrainingModules
from sdcallbacks.selection.checkpoint import ModelCheckpoint
from sdcallbacks.selection.early_stopping import EarlyStopping, StoppingReason
from sdcallbacks.selection.snapshots import WeightsWriter, load_weights
from sdcallbacks.validation.result import ValidationResult

logger = logging.getLogger("sdcallbacks")


@dataclass(frozen=True)
class Decision:
    stop: bool = False
    new_best: bool = False
    best_model_path: str | None = None
    stopping_reason: str = StoppingReason.NOT_STOPPED.value


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
        self.monitored: list[tuple[int, float]] = []  # (step, monitored value) of each decision

    def decide(self, result: ValidationResult, weights: TrainingModules | WeightsWriter) -> Decision:
        """Keep ``weights`` if ``result`` is among the best, and say whether to stop."""
        monitored = result.monitored
        if self.monitor is None or monitored is None:
            return Decision()
        step, values = result.step, monitored.values
        if self.monitor not in values:
            message = f"monitor {self.monitor!r} was not logged at step {step}; logged keys: {sorted(values)}"
            if self.strict:
                raise MonitorMissingError(message)
            logger.warning("sdcallbacks: %s (early_stopping.strict is off: no check this time)", message)
            return Decision()
        score = float(values[self.monitor])
        self.monitored.append((step, score))
        new_best = False
        if self.checkpoint is not None:
            new_best = self.checkpoint.update(score, step, weights)
            if new_best:
                logger.info(
                    "sdcallbacks: new best %s = %.6g at step %d -> %s",
                    self.monitor,
                    score,
                    step,
                    self.checkpoint.best_model_path,
                )
        stop = self.early_stopping is not None and self.early_stopping.check(score)
        if stop:
            logger.warning(
                "sdcallbacks: early stop at step %d: %s", step, self.early_stopping.stopping_message
            )
        return Decision(
            stop=stop,
            new_best=new_best,
            best_model_path=self.best_model_path,
            stopping_reason=self.stopping_reason,
        )

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
        """Run-summary values: ``best/<monitor>``, ``best/step``, ``best/path``, ``early_stop/reason``."""
        out: dict[str, Any] = {"early_stop/reason": self.stopping_reason}
        if self.best_model_score is not None:
            out[f"best/{self.monitor}"] = self.best_model_score
            out["best/step"] = self.best_step
            out["best/path"] = self.best_model_path
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
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.checkpoint and state.get("checkpoint"):
            self.checkpoint.load_state_dict(state["checkpoint"])
        if self.early_stopping and state.get("early_stopping"):
            self.early_stopping.load_state_dict(state["early_stopping"])
        monitored = state.get("monitored", state.get("history", []))  # "history" before 0.1's renames
        self.monitored = [tuple(item) for item in monitored]
