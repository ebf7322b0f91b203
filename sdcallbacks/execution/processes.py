"""``Processes``: the run's processes as a validation sees them; the only code that knows ranks.

Each process draws its share of the jobs (a strided split, so no job is padded or drawn twice); the
shares are gathered on the main process, which scores, reports and decides; the decision is broadcast
back. An error on any process must not leave the others waiting in a collective: work between
collectives is :meth:`attempt`-ed (or :meth:`carried`), the error travels through the gather and the
broadcast as text, and every process then raises the same :class:`ValidationFailed`. With one process
errors simply propagate.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

from sdcallbacks.validation.result import DrawnVariant

T = TypeVar("T")


class ValidationFailed(RuntimeError):
    """A validation failed on some process; raised on every process alike."""


class Processes:
    def __init__(self, accelerator: Any = None):
        self.accelerator = accelerator

    @property
    def rank(self) -> int:
        return 0 if self.accelerator is None else self.accelerator.process_index

    @property
    def world(self) -> int:
        return 1 if self.accelerator is None else self.accelerator.num_processes

    @property
    def is_main(self) -> bool:
        return self.accelerator is None or self.accelerator.is_main_process

    def share(self, items: Sequence[T]) -> list[T]:
        """This process's share of ``items``."""
        return list(items[self.rank :: self.world])

    def attempt(self, fn: Callable[[], T]) -> tuple[T | None, str | None]:
        """``fn()``, or its traceback when other processes must be told (they wait in the next gather)."""
        if self.world == 1:
            return fn(), None
        try:
            return fn(), None
        except Exception:
            return None, f"process {self.rank}:\n{traceback.format_exc()}"

    @contextmanager
    def carried(self, failures: list[str]) -> Iterator[None]:
        """Main-process work between collectives: with one process an error propagates; with several it is
        kept in ``failures`` for the broadcast, so every process still makes the same collective calls."""
        try:
            yield
        except Exception:
            if self.world == 1:
                raise
            failures.append(traceback.format_exc())

    def gather(self, part: DrawnVariant | None, error: str | None) -> tuple[DrawnVariant | None, list[str]]:
        """Every process's share as one variant on the main process (None elsewhere), and the errors."""
        if self.world == 1:
            return part, [error] if error else []
        from accelerate.utils import gather_object

        # gather_object flattens one level: gather a list holding one pair per process.
        shares = gather_object([(part, error)])
        errors = [e for _, e in shares if e]
        parts = [p for p, _ in shares if p is not None]
        if not self.is_main or errors or not parts:
            return None, errors
        return DrawnVariant.merged(parts), errors

    def collect(self, value: Any) -> list[Any]:
        """Every process's ``value``, in rank order (all must call it)."""
        if self.world == 1:
            return [value]
        from accelerate.utils import gather_object

        return gather_object([value])  # one level is flattened: one item per process

    def broadcast(self, value: Any) -> Any:
        """The main process's ``value`` on every process (all must call it)."""
        if self.world > 1:
            from accelerate.utils import broadcast_object_list

            value = broadcast_object_list([value], from_process=0)[0]
        return value
