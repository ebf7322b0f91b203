"""Face identity (MTCNN + InceptionResnetV1)."""

from sdcallbacks.metrics.identity.identity import Identity

__all__ = ["Identity"]
