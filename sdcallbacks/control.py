"""``Control``: what the training loop should do after a hook, the callback's answer to every call."""

from __future__ import annotations

from dataclasses import dataclass

from sdcallbacks.selection.selection import Decision


@dataclass(frozen=True)
class Control:
    """What the training loop should do after this step."""

    should_validate: bool = False
    should_stop: bool = False
    should_save: bool = False

    def merged(self, decision: Decision | None) -> Control:
        """This control with a later-delivered decision's stop and new best added."""
        if decision is None:
            return self
        return Control(
            self.should_validate, self.should_stop or decision.stop, self.should_save or decision.new_best
        )
