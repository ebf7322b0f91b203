"""Subject fidelity against reference images (DreamBench): DINO."""

from sdcallbacks.metrics.subject.dino import Dino

__all__ = ["Dino"]
