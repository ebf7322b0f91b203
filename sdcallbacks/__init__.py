"""sdcallbacks: validation callbacks for Stable Diffusion fine-tuning.

Sample every N steps, score (tags, identity, aesthetics, ...), log to W&B, keep the best step, stop early.
"""

from sdcallbacks.callback import Control, ValidationCallback
from sdcallbacks.config import ConfigError, RunConfig, load_config

__version__ = "0.1.0"
__all__ = ["ConfigError", "Control", "RunConfig", "ValidationCallback", "__version__", "load_config"]
