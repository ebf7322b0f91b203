"""Style similarity to reference images."""

from sdcallbacks.metrics.style.style_loss import StyleLoss, style_loss

__all__ = ["StyleLoss", "style_loss"]
