"""Configuration: pydantic models and the file loader."""

from sdcallbacks.config.loading import ConfigError, load_config, validate_config
from sdcallbacks.config.schema import (
    CheckpointConfig,
    EarlyStoppingConfig,
    MetricsConfig,
    PromptDefaults,
    PromptEntry,
    RunConfig,
    SamplingConfig,
    ScheduleConfig,
    TagAccuracyConfig,
)

__all__ = [
    "CheckpointConfig",
    "ConfigError",
    "EarlyStoppingConfig",
    "MetricsConfig",
    "PromptDefaults",
    "PromptEntry",
    "RunConfig",
    "SamplingConfig",
    "ScheduleConfig",
    "TagAccuracyConfig",
    "load_config",
    "validate_config",
]
