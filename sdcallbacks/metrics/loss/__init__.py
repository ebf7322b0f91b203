"""Model metrics that need no sampling."""

from sdcallbacks.metrics.loss.val_loss import ValidationLoss

__all__ = ["ValidationLoss"]
