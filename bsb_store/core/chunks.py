"""Chunk identity, chunk filters and the ChunkLoader mixin.

A chunk is a cube of space addressed by three int16 coordinates. Its id packs the
coordinates exactly as BSB does: each coordinate is viewed as uint16 and the id is
``x + y * 2**16 + z * 2**32``, so negative coordinates wrap and ids are 48-bit. One store
uses one chunk size; a chunk may carry it or not (``size=None``).

:class:`ChunkLoader` gives a resource the chunk filter machinery (``set_chunk_filter``,
``include_chunk``, ``chunk_context``, ...) and the declaration of its per-chunk columns
(:class:`ChunkedProperty`, :class:`ChunkedCollection`). The storage of the columns is
done by the engine's write path; the mixin only decides *which* chunks a call sees.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..exceptions import ChunkError

_INT16_MIN, _INT16_MAX = -(2**15), 2**15 - 1
_ID_MAX = 2**48


class Chunk:
    """An immutable chunk: coordinates, packed id, and optionally the chunk size."""

    __slots__ = ("_coords", "_id", "_size")

    def __init__(
        self, coords: Iterable[int], size: Iterable[float] | float | None = None
    ):
        try:
            values = [int(c) for c in coords]
            exact = all(float(c) == int(c) for c in coords)
        except (TypeError, ValueError) as e:
            raise ChunkError(
                f"Chunk coordinates must be 3 integers, got {coords!r}.", coords=coords
            ) from e
        if len(values) != 3 or not exact:
            raise ChunkError(
                f"Chunk coordinates must be 3 integers, got {coords!r}.", coords=coords
            )
        for v in values:
            if not _INT16_MIN <= v <= _INT16_MAX:
                raise ChunkError(
                    f"Chunk coordinate {v} of {tuple(values)} is outside the int16 range "
                    f"[{_INT16_MIN}, {_INT16_MAX}].",
                    coords=tuple(values),
                )
        self._coords = tuple(values)
        self._id = pack_id(self._coords)
        self._size = parse_size(size)

    @classmethod
    def from_id(cls, id: int, size: Iterable[float] | float | None = None) -> Chunk:
        """The chunk with packed id ``id``."""
        return cls._trusted(unpack_id(id), int(id), parse_size(size))

    @classmethod
    def _trusted(
        cls,
        coords: tuple[int, int, int],
        id: int,
        size: tuple[float, float, float] | None,
    ) -> Chunk:
        """A chunk from values already validated and normalised (int16 coordinates,
        their packed ``id``, a parsed size): reads build one or two chunks per block,
        and the checks of ``__init__`` cost more than the rest of such a call."""
        chunk = object.__new__(cls)
        chunk._coords, chunk._id, chunk._size = coords, id, size
        return chunk

    @property
    def coords(self) -> tuple[int, int, int]:
        return self._coords  # type: ignore[return-value]

    @property
    def id(self) -> int:
        return self._id

    @property
    def size(self) -> tuple[float, float, float] | None:
        """The chunk size, or None when the chunk does not carry one."""
        return self._size

    def with_size(self, size: Iterable[float] | float | None) -> Chunk:
        return Chunk(self._coords, size)

    @property
    def ldc(self) -> np.ndarray:
        """Least dominant corner (the origin of the chunk in space)."""
        return np.asarray(self._coords, float) * self._size_array()

    @property
    def mdc(self) -> np.ndarray:
        """Most dominant corner (the far corner of the chunk in space)."""
        return (np.asarray(self._coords, float) + 1) * self._size_array()

    def _size_array(self) -> np.ndarray:
        return np.full(3, np.nan) if self._size is None else np.asarray(self._size)

    def __iter__(self) -> Iterator[int]:
        return iter(self._coords)

    def __len__(self) -> int:
        return 3

    def __getitem__(self, i: int) -> int:
        return self._coords[i]

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        return np.asarray(self._coords, dtype=dtype or np.int16)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Chunk):
            return self._id == other._id
        try:
            return self._id == chunk_id(other)
        except (ChunkError, TypeError):
            return NotImplemented

    def __lt__(self, other: Chunk) -> bool:
        return self._id < chunk_id(other)

    def __hash__(self) -> int:
        return hash(self._id)

    def __repr__(self) -> str:
        size = "" if self._size is None else f", size={self._size}"
        return f"Chunk({self._coords}{size})"

    def __reduce__(self):
        return (Chunk, (self._coords, self._size))


def pack_id(coords: Iterable[int]) -> int:
    """Pack int16 coordinates into BSB's 48-bit chunk id."""
    x, y, z = (int(c) & 0xFFFF for c in coords)
    return x + (y << 16) + (z << 32)


def unpack_id(id: int) -> tuple[int, int, int]:
    """Inverse of :func:`pack_id`."""
    id = int(id)
    if not 0 <= id < _ID_MAX:
        raise ChunkError(f"Chunk id {id} is outside [0, 2**48).", id=id)
    parts = ((id >> s) & 0xFFFF for s in (0, 16, 32))
    return tuple(p - 0x10000 if p >= 0x8000 else p for p in parts)  # type: ignore[return-value]


def parse_size(size: Any) -> tuple[float, float, float] | None:
    """Normalise a chunk size: None (or all NaN) for undefined, else 3 positive floats."""
    if size is None:
        return None
    if type(size) is np.ndarray and size.shape == (3,) and size.dtype == float:
        size = tuple(size.tolist())  # bsb's chunk dimensions
    if (
        type(size) is tuple
        and len(size) == 3
        and all(type(v) is float and 0 < v < math.inf for v in size)
    ):
        # The normalised form itself (what the store and every Chunk hold): checked
        # without numpy, since chunks are made per block on the read path.
        return size
    arr = np.asarray(size, dtype=float).reshape(-1)
    if arr.size == 1:
        arr = np.repeat(arr, 3)
    if arr.size != 3:
        raise ChunkError(f"A chunk size needs 3 values, got {size!r}.", size=size)
    if np.all(np.isnan(arr)):
        return None
    if not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        raise ChunkError(
            f"A chunk size must be 3 finite positive numbers, got {size!r}.", size=size
        )
    return tuple(float(v) for v in arr)  # type: ignore[return-value]


def to_chunk(obj: Any, size: Any = None) -> Chunk:
    """Convert a chunk given as a Chunk, a 3-sequence or an object with coordinates.

    Objects like bsb's ``Chunk`` (an int16 ndarray with ``.dimensions``) keep their size.
    """
    if isinstance(obj, Chunk):
        return obj if size is None or obj.size is not None else obj.with_size(size)
    own_size = getattr(obj, "dimensions", None)
    if own_size is not None:
        own_size = parse_size(own_size)
        if own_size is not None:
            size = own_size
    if isinstance(obj, (int, np.integer)):
        raise ChunkError(
            f"A chunk must be given by coordinates, got the bare number {obj!r} "
            "(use Chunk.from_id for packed ids).",
            chunk=obj,
        )
    if isinstance(obj, np.ndarray) and obj.dtype == np.int16 and obj.shape == (3,):
        # bsb's Chunk (an int16 array): every value is a valid coordinate.
        coords = tuple(obj.tolist())
        return Chunk._trusted(coords, pack_id(coords), parse_size(size))  # type: ignore[arg-type]
    arr = np.asarray(obj)
    if arr.shape != (3,):
        raise ChunkError(
            f"A chunk must be 3 coordinates, got {obj!r} of shape {arr.shape}.", chunk=obj
        )
    return Chunk(arr.tolist(), size)


def chunk_id(obj: Any) -> int:
    """The packed id of a chunk-like object."""
    if isinstance(obj, Chunk):
        return obj.id
    return to_chunk(obj).id


def chunklist(chunks: Iterable[Any], size: Any = None) -> list[Chunk]:
    """Sorted, unique chunks (BSB's ``chunklist`` order: ascending id)."""
    unique = {c.id: c for c in (to_chunk(c, size) for c in chunks)}
    return [unique[k] for k in sorted(unique)]


@dataclass(frozen=True)
class ChunkedProperty:
    """A per-chunk column: one row per cell (or per connection) of the chunk.

    ``shape`` is the shape of one row, ``fill`` the value rows get when an append does
    not provide this column while others do.
    """

    name: str
    dtype: str
    shape: tuple[int, ...] = ()
    fill: float = 0

    def empty(self, n: int = 0) -> np.ndarray:
        return np.full((n, *self.shape), self.fill, dtype=self.dtype)


@dataclass(frozen=True)
class ChunkedCollection:
    """A named family of per-chunk columns whose keys are chosen by the user
    (``additional`` data of a placement set). Each key keeps the dtype it is first
    stored with."""

    name: str
    fill: float = 0


class ChunkLoader:
    """Mixin for chunked resources: a chunk filter and chunk enumeration.

    Subclasses implement :meth:`_stored_chunk_ids` (the ids of every chunk that holds a
    row or was created empty) and :meth:`_chunk_size`. The filter is a sorted tuple of
    chunk ids, or ``None`` for "every chunk".
    """

    _chunk_filter: tuple[int, ...] | None = None

    def _stored_chunk_ids(self) -> list[int]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _chunk_size(self) -> tuple[float, float, float] | None:  # pragma: no cover
        raise NotImplementedError

    def set_chunk_filter(self, chunks: Iterable[Any] | None) -> None:
        """Restrict reads to these chunks; ``None`` or an empty list means all chunks."""
        if chunks is None:
            self._chunk_filter = None
            return
        ids = sorted({chunk_id(c) for c in chunks})
        self._chunk_filter = tuple(ids) if ids else None

    def clear_chunk_filter(self) -> None:
        self._chunk_filter = None

    def include_chunk(self, chunk: Any) -> None:
        """Add a chunk to the filter; without a filter, the filter becomes this chunk
        alone (as in BSB: the first included chunk starts a filter). Including a chunk
        twice keeps it once."""
        if self._chunk_filter is None:
            self._chunk_filter = (chunk_id(chunk),)
        else:
            self._chunk_filter = tuple(sorted({*self._chunk_filter, chunk_id(chunk)}))

    def exclude_chunk(self, chunk: Any) -> None:
        """Remove a chunk from the filter; without a filter, every other stored chunk
        stays. A filter left empty means *no* filter (every chunk), as in BSB, where an
        empty chunk list is no restriction; excluding a chunk that is not in the filter
        changes nothing."""
        cid = chunk_id(chunk)
        current = self._chunk_filter
        if current is None:
            current = tuple(sorted(self._stored_chunk_ids()))
        self._chunk_filter = tuple(c for c in current if c != cid) or None

    def get_chunk_filter(self) -> list[Chunk] | None:
        if self._chunk_filter is None:
            return None
        size = self._chunk_size()
        return [Chunk.from_id(c, size) for c in self._chunk_filter]

    @contextlib.contextmanager
    def chunk_context(self, chunks: Iterable[Any] | None) -> Iterator[None]:
        """Temporarily swap the chunk filter."""
        previous = self._chunk_filter
        self.set_chunk_filter(chunks)
        try:
            yield
        finally:
            self._chunk_filter = previous

    def get_all_chunks(self) -> list[Chunk]:
        """Every chunk stored in the set (including empty ones), sorted, with the store's
        chunk size."""
        return self._chunks_of(self._stored_chunk_ids())

    def get_loaded_chunks(self) -> list[Chunk]:
        """The chunks the current filter lets through (all stored chunks without one)."""
        return self._chunks_of(self._view_chunk_ids())

    def _chunks_of(self, ids: Iterable[int]) -> list[Chunk]:
        # Not through get_all_chunks: subclasses (the BSB plugin) override the public
        # methods to return their own chunk type.
        size = self._chunk_size()
        return [Chunk.from_id(c, size) for c in sorted(ids)]

    def _view_chunk_ids(self, stored: Iterable[int] | None = None) -> list[int]:
        """Sorted ids of the chunks a read covers: the filter, else every stored chunk."""
        if self._chunk_filter is not None:
            return list(self._chunk_filter)
        return sorted(self._stored_chunk_ids() if stored is None else stored)
