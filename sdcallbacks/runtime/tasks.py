"""``BackgroundTask``: one function run in a daemon thread, collected later in the caller's thread.

Used for ``scoring.mode: async``: the training loop hands a validation's images over and goes on. The
thread is a daemon so that a job stuck in a backbone never keeps the interpreter from exiting; its
exception is kept with its traceback and re-surfaces where the caller collects the job, in the training
process's log.
"""

from __future__ import annotations

import threading
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Generic, TypeVar

import torch

T = TypeVar("T")


class BackgroundTask(Generic[T]):
    def __init__(self, fn: Callable[[], T], name: str = "sdcallbacks-task"):
        self.name = name
        self.result: T | None = None
        self.error: BaseException | None = None
        self.traceback: str | None = None
        self._fn = fn
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self.result = self._fn()
        except BaseException as error:  # kept for the caller's thread, never lost in this one
            self.error = error
            self.traceback = traceback.format_exc()
        finally:
            self._fn = None  # drop the images and snapshot the closure holds
            self._done.set()

    def done(self) -> bool:
        return self._done.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the job ends or ``timeout`` seconds pass; whether it ended."""
        return self._done.wait(timeout)


@contextmanager
def side_stream(device: str | torch.device | None) -> Iterator[None]:
    """Run CUDA work of a background thread on its own stream, so it does not queue behind (or in front
    of) the training loop's kernels on the default stream; synchronised before the body's results are
    used. Elsewhere a no-op."""
    device = torch.device(device) if device is not None else torch.device("cpu")
    if device.type != "cuda" or not torch.cuda.is_available():
        yield
        return
    stream = torch.cuda.Stream(device)
    with torch.cuda.stream(stream):
        yield
    stream.synchronize()
