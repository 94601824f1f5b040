"""bsb-store: fast, crash-safe HDF5 storage for chunked scaffold network models.

The public API is framework-independent (numpy in, numpy out)::

    from bsb_store import HDF5Engine, PlacementSet
    engine = HDF5Engine("network.h5")
    engine.create()
    ps = PlacementSet.require(engine, "granule_cell")
    ps.append_data((0, 0, 0), positions)

The BSB storage-engine plugin lives in :mod:`bsb_store.plugin` (needs bsb-core) and
the declarative HDF5 format layer in :mod:`bsb_store.h5`.
"""

__version__ = "0.1.0"

from . import exceptions
from .core import (
    Chunk,
    ConnectivitySet,
    FileStore,
    HDF5Engine,
    MorphologyData,
    MorphologyRepository,
    PlacementSet,
    chunklist,
)


def open_store(root, comm=None, *, create: bool = False, **options) -> HDF5Engine:
    """Open the store at ``root``; with ``create=True`` create it when it is missing."""
    engine = HDF5Engine(root, comm, **options)
    if create and not engine.exists():
        engine.create()
    return engine


__all__ = [
    "Chunk",
    "ConnectivitySet",
    "FileStore",
    "HDF5Engine",
    "MorphologyData",
    "MorphologyRepository",
    "PlacementSet",
    "__version__",
    "chunklist",
    "exceptions",
    "open_store",
]
