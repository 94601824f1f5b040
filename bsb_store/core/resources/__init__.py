"""The four resources of a store, all built on the same chunk and write machinery."""

from .placement import PlacementSet

__all__ = ["PlacementSet"]
