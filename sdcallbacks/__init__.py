"""sdcallbacks: validation callbacks for Stable Diffusion fine-tuning.

Sample every N steps, score (tags, identity, aesthetics, ...), log to W&B, keep the best step, stop early.

* :class:`ValidationCallback` and :class:`Control`: the hooks of an accelerate training loop;
* :func:`validate`, :class:`Validation`, :class:`ValidationResult`: one validation as a plain call;
* :func:`load_config`, :class:`RunConfig`, :class:`ConfigError`: run configs;
* :data:`METRICS`, :func:`build_metrics`, :func:`register_metric`: the metric registry;
* :func:`load_prompts`: a config's validation prompts.
"""

from sdcallbacks.callback import ValidationCallback
from sdcallbacks.config import ConfigError, RunConfig, load_config
from sdcallbacks.control import Control
from sdcallbacks.metrics import METRICS, build_metrics, register_metric
from sdcallbacks.prompts.library import load_prompts
from sdcallbacks.validation import Validation, ValidationResult, validate

__version__ = "0.1.0"
__all__ = [
    "METRICS",
    "ConfigError",
    "Control",
    "RunConfig",
    "Validation",
    "ValidationCallback",
    "ValidationResult",
    "__version__",
    "build_metrics",
    "load_config",
    "load_prompts",
    "register_metric",
    "validate",
]
