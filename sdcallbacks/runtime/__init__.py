"""What a validation costs the training process: background jobs and memory figures."""

from sdcallbacks.runtime.memory import MemoryMeter
from sdcallbacks.runtime.tasks import BackgroundTask, side_stream

__all__ = ["BackgroundTask", "MemoryMeter", "side_stream"]
