"""Type aliases shared by every layer."""

from __future__ import annotations

from typing import Any, Literal, Protocol, Union, runtime_checkable

import numpy as np
import numpy.typing as npt

#: A chunk's packed 48-bit id (``x + y*2**16 + z*2**32`` over uint16-wrapped int16).
ChunkId = int
#: h5py-style open modes accepted by files and engines.
Mode = Literal["r", "r+", "a", "w", "w-", "x"]
ArrayLike = npt.ArrayLike
FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


@runtime_checkable
class Named(Protocol):
    """Anything with a ``name`` (a BSB ``CellType`` for instance)."""

    name: str


#: A chunk given as a 3-sequence of int coordinates, an object with ``.id`` or a Chunk.
ChunkLike = Union[Any, "tuple[int, int, int]", "list[int]"]
