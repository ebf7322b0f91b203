"""The offline tiny world for tests and the demo (no hub, real file formats)."""

from sdcallbacks.testing.world import TinyWorld, WorldRecipe, build_tiny_world

__all__ = ["TinyWorld", "WorldRecipe", "build_tiny_world"]
