"""Where a validation's stages run: this process or several, now or in a scoring thread."""

from sdcallbacks.execution.background import BackgroundScoring
from sdcallbacks.execution.processes import Processes, ValidationFailed
from sdcallbacks.execution.publish import Publisher
from sdcallbacks.execution.runner import ValidationRunner
from sdcallbacks.execution.synchronous import SynchronousScoring

__all__ = [
    "BackgroundScoring",
    "Processes",
    "Publisher",
    "SynchronousScoring",
    "ValidationFailed",
    "ValidationRunner",
]
