"""The four resources of a store, all built on the same chunk and write machinery."""

from .connectivity import ConnectivitySet
from .files import FileStore
from .morphologies import MorphologyData, MorphologyRepository
from .placement import PlacementSet

__all__ = [
    "ConnectivitySet",
    "FileStore",
    "MorphologyData",
    "MorphologyRepository",
    "PlacementSet",
]
