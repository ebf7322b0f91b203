"""What a validation costs the training process: background jobs and memory figures."""

from sdcallbacks.runtime.jobs import BackgroundJob, side_stream
from sdcallbacks.runtime.memory import MemoryMeter

__all__ = ["BackgroundJob", "MemoryMeter", "side_stream"]
