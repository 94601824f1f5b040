"""The engine core: framework-independent, numpy in and numpy out."""

from .chunks import Chunk, ChunkLoader, chunklist
from .engine import HDF5Engine
from .resources import (
    ConnectivitySet,
    FileStore,
    MorphologyData,
    MorphologyRepository,
    PlacementSet,
)

__all__ = [
    "Chunk",
    "ChunkLoader",
    "ConnectivitySet",
    "FileStore",
    "HDF5Engine",
    "MorphologyData",
    "MorphologyRepository",
    "PlacementSet",
    "chunklist",
]
