"""``ValidationCallback``: sample, score, log, keep the best and stop early, from a plain accelerate loop.

Usage (the five added lines)::

    cb = ValidationCallback.from_config("configs/my_run.yaml", accelerator=accelerator)
    cb.on_train_start(unet=unet, text_encoder=text_encoder, vae=vae, tokenizer=tokenizer,
                      noise_scheduler=noise_scheduler)
    control = cb.on_step_end(global_step)   # after each optimizer step; a no-op unless due
    if control.should_stop: break
    cb.on_train_end()

The callback is the loop's hooks only. One validation is the core's
(:class:`~sdcallbacks.validation.Validation`: plan the variants, draw, score, aggregate against the
baseline); where its stages run (this process or several, now or in a scoring thread) is the runner's
(:class:`~sdcallbacks.execution.ValidationRunner`); files and trackers take its result, and selection
(:class:`~sdcallbacks.selection.Selection`) decides on it.

A failed validation is logged and training goes on (``on_error: warn``). With ``scoring.mode: async``
a decision reaches the loop at most one validation late (:class:`~sdcallbacks.execution.BackgroundScoring`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sdcallbacks.config.loading import ConfigError, load_config, validate_config
from sdcallbacks.config.schema import RunConfig
from sdcallbacks.control import Control
from sdcallbacks.execution.assemble import (
    build_runner,
    build_sampler,
    family_problems,
    placed_under_project,
)
from sdcallbacks.metrics import Metric
from sdcallbacks.sampling.encoders import load_missing_encoders
from sdcallbacks.sampling.families import resolve_family
from sdcallbacks.sampling.modules import TrainingModules
from sdcallbacks.sampling.schedule import ValidationSchedule

_CONTINUE = Control()


class ValidationCallback:
    def __init__(
        self,
        config: RunConfig,
        accelerator: Any = None,
        metrics: list[Metric] | None = None,
        register: bool = True,
    ):
        self.config = config = placed_under_project(config, accelerator)
        self.accelerator = accelerator
        self.runner = build_runner(config, accelerator, metrics)
        self.validation = self.runner.validation
        self.selection = self.runner.selection
        self.writer = self.runner.publisher.writer
        self.schedule = ValidationSchedule(config.schedule)
        self._loss_every = config.metrics.val_loss.every_n_steps if config.metrics.val_loss else None
        self._resumed = False  # load_state_dict ran: on_train_start continues the run's outputs
        if register and accelerator is not None:
            # accelerator.save_state/load_state then carry the callback's bookkeeping.
            accelerator.register_for_checkpointing(self)

    @classmethod
    def from_config(cls, config: str | Path | dict | RunConfig, accelerator: Any = None, **kwargs: Any):
        """From a YAML/JSON file, a dict or a :class:`RunConfig`; config errors name the file and key."""
        if not isinstance(config, RunConfig):
            config = validate_config(config) if isinstance(config, dict) else load_config(config)
        return cls(config, accelerator=accelerator, **kwargs)

    def on_train_start(
        self,
        *,
        components: dict[str, Any] | None = None,
        global_step: int = 0,
        steps_per_epoch: float | None = None,
        **modules: Any,
    ) -> Control:
        """Register the training modules by their diffusers names (``unet`` or ``transformer``, ``vae``,
        ``text_encoder``, ``tokenizer``, ``noise_scheduler``, ``text_encoder_2``/``_3``,
        ``tokenizer_2``/``_3``, ``ema_unet`` or ``ema_transformer``) or as a diffusers pipeline's
        ``components`` (names win); run the baseline validation unless it already ran. The model family
        (``sampling.family``) is told from the modules; modules of two families, and prompts or a loss the
        family cannot draw or compute, are an error here, before training. Text encoders and tokenizers
        given as None (``--pre_compute_text_embeddings``) are loaded from the base model for validation
        (:mod:`sdcallbacks.sampling.encoders`)."""
        live = TrainingModules.from_components(components, **modules)
        load_missing_encoders(live, self.config.sampling.text_encoders_from)
        family = resolve_family(live, self.config.sampling.family)
        problems = family_problems(self.config, family, live, self.validation)
        if problems:
            raise ConfigError(self.config.source, problems)
        self.validation.sampler = build_sampler(self.config, live, self.accelerator)
        self.schedule.start(global_step, steps_per_epoch)
        problem = self.runner.claim_output_dir(
            resumed=self._resumed or global_step > 0, overwrite=self.config.overwrite_output_dir
        )
        if problem is not None:
            raise ConfigError(self.config.source, [problem])
        # The main process's view decides (a resumed run restores the baseline there), so all agree.
        if self.config.sampling.baseline and not self.runner.processes.broadcast(
            bool(self.validation.baseline)
        ):
            return self.validate(global_step, baseline=True)
        return _CONTINUE

    def on_step_end(self, global_step: int) -> Control:
        """Call after every optimizer step. Costs microseconds unless a validation is due."""
        if self.accelerator is not None and not self.accelerator.sync_gradients:
            return _CONTINUE
        if self.schedule.is_due(global_step):
            return self.validate(global_step)
        if self._loss_every is not None and global_step % self._loss_every == 0:
            self.runner.loss_between_validations(global_step)
        decision = self.runner.poll()
        return _CONTINUE if decision is None else _CONTINUE.merged(decision)

    def on_train_end(self, global_step: int | None = None) -> Control:
        """Validate the final step unless it already was (``schedule.validate_at_end``); then, with
        ``early_stopping.restore_best_at_end``, load the best checkpoint back into the model (every
        process). All processes must call it."""
        control = _CONTINUE
        if global_step is not None and self.schedule.is_due_at_end(global_step):
            control = self.validate(global_step)
        control = control.merged(self.runner.finish())
        if self.validation.sampler is not None:  # every process loads the same (main-written) best weights
            self.selection.restore_best(self.validation.sampler.modules)
        self.runner.publisher.finish(self.selection.summary())
        return control

    def validate(self, global_step: int, baseline: bool = False) -> Control:
        """Run one validation now (all processes must call it together)."""
        if self.validation.sampler is None:
            raise RuntimeError("call on_train_start(...) before validating")
        self.schedule.mark_done(global_step)
        decision = self.runner.run(global_step, baseline)
        return Control(should_validate=True).merged(decision)

    def wait_for_scoring(self) -> Control:
        """Block until the background scoring task in flight, if any, has finished (``scoring.wait_s`` at
        most; main process); what its decision asks of the loop."""
        return Control().merged(self.runner.wait())

    @property
    def failed_validations(self) -> int:
        return self.runner.failed_validations

    @property
    def best_model_score(self) -> float | None:
        return self.selection.best_model_score

    @property
    def best_step(self) -> int | None:
        return self.selection.best_step

    @property
    def best_model_path(self) -> str | None:
        return self.selection.best_model_path

    @property
    def stopping_reason(self) -> str:
        return self.selection.stopping_reason

    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs to continue as if it had not stopped (plain Python values). A
        background task in flight is waited for first (``scoring.wait_s``), so its results are in; its
        decision is kept for the loop's next hook (and in the state, for a resumed run)."""
        return {"schedule": self.schedule.state_dict(), **self.runner.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._resumed = True
        self.schedule.load_state_dict(state["schedule"])
        self.runner.load_state_dict(state)
