"""Configuration: pydantic models and the file loader."""

from sdcallbacks.config.loading import ConfigError, load_config, validate_config
from sdcallbacks.config.metrics import ClipModelConfig, MetricConfig, MetricsConfig, TagAccuracyConfig
from sdcallbacks.config.schema import (
    CheckpointConfig,
    EarlyStoppingConfig,
    PromptDefaults,
    PromptEntry,
    RunConfig,
    SamplingConfig,
    ScheduleConfig,
    ScoringConfig,
)

__all__ = [
    "CheckpointConfig",
    "ClipModelConfig",
    "ConfigError",
    "EarlyStoppingConfig",
    "MetricConfig",
    "MetricsConfig",
    "PromptDefaults",
    "PromptEntry",
    "RunConfig",
    "SamplingConfig",
    "ScheduleConfig",
    "ScoringConfig",
    "TagAccuracyConfig",
    "load_config",
    "validate_config",
]
