"""The engine core: framework-independent, numpy in and numpy out."""

from .chunks import Chunk, ChunkLoader, chunklist
from .engine import HDF5Engine
from .resources import PlacementSet

__all__ = [
    "Chunk",
    "ChunkLoader",
    "HDF5Engine",
    "PlacementSet",
    "chunklist",
]
