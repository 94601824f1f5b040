"""ConnectivitySet: the connections between two cell types, block by block.

A connection is a pair of locations, int ``[cell, branch, point]`` rows (``-1, -1`` in the
last two columns for point neurons). Connections live in *blocks*: all connections from
one presynaptic (source) chunk to one postsynaptic (destination) chunk. As in BSB, every
block is visible in two directions: ``"out"`` (local = presynaptic chunk, global =
postsynaptic chunk) and ``"inc"`` (local = postsynaptic, global = presynaptic); the
``cell`` column is the cell's index inside its own chunk.

On disk (``connectivity/<tag>/``, a chunked set as described in ``resources/base.py``)::

    @pre @post @tag @created_at @columns
    index/key   int64 (K, 3)  [direction (0 = inc, 1 = out), local chunk id, global id]
    index/count int64 (K,)    rows of each block
    inc/<local id>/<global id>/{local_locs, global_locs}   int64 (count, 3)
    out/<local id>/<global id>/{local_locs, global_locs}   int64 (count, 3)

Every block direction has its own pair of growable datasets, so appending to a block
costs O(rows appended) whatever the set already holds, and a local chunk may connect to
any number of global chunks (no attribute lists, no pointer attributes).

Writes take the engine's append path: a block is stored *once* in the writer's shard
(streams ``("C", tag, "src")`` and ``("C", tag, "dst")``, key0 = source chunk id,
key1 = destination chunk id) and :func:`apply_connectivity` materialises both directions
when the shard is merged, so ``inc`` and ``out`` always mirror each other.

Reads keep only the index in memory (parsed once per read generation of the engine's
read handle, i.e. until any process publishes a change); iterators read a few blocks at
a time, so iterating a set larger than memory needs bounded memory. Blocks are read with
h5py's low-level API straight into preallocated arrays (per block: one group open, two
dataset opens, two reads), since per-block object overhead, not bytes, sets the time.
Every returned array is a fresh, writable numpy array.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, NamedTuple

import h5py
import numpy as np
from h5py import h5d, h5g

from ...exceptions import (
    ChunkSizeError,
    DatasetExistsError,
    DatasetNotFoundError,
    InvalidInputError,
    LocationOutOfBoundsError,
    ShapeError,
    TypeMismatchError,
)
from ..chunks import Chunk, ChunkedProperty, chunklist, to_chunk
from ..layout import now_iso
from ..writes import consolidate as merge
from ..writes.shard import Call, Record
from ..writes.txn import Transaction
from .base import (
    NO_CHUNK_CACHE,
    ChunkTable,
    KeyT,
    Resource,
    create_index,
    read_rows,
)
from .validate import as_locations, parse_name

if TYPE_CHECKING:
    from ..engine import HDF5Engine

GROUP = "connectivity"
#: Direction names by their number in the index (0 = "inc", 1 = "out").
DIRECTIONS = ("inc", "out")
LOCAL_LOCS = ChunkedProperty("local_locs", "<i8", (3,), -1)
GLOBAL_LOCS = ChunkedProperty("global_locs", "<i8", (3,), -1)
#: Iterators read blocks in batches of at most this many rows (or one larger block) ...
READ_BATCH_ROWS = 2**18
#: ... and at most this many blocks: memory stays bounded, lock round-trips few.
READ_BATCH_BLOCKS = 256


def _chunk_path(key: KeyT) -> str:
    """Path of a block group inside the set: ``<dir>/<local id>/<global id>``."""
    return f"{DIRECTIONS[key[0]]}/{key[1]}/{key[2]}"


_LOCAL_NAME, _GLOBAL_NAME = LOCAL_LOCS.name.encode(), GLOBAL_LOCS.name.encode()


def _read_block_into(
    set_id: h5py.h5g.GroupID, key: KeyT, local: np.ndarray, glob: np.ndarray
) -> None:
    """Read the first ``len(local)`` rows of block ``key`` into ``local`` and ``glob``
    (C-contiguous int64 (n, 3) arrays). Low-level opens: the block group once, then
    its two datasets by name, which costs a third of ``group[path][:n]`` twice."""
    block = h5g.open(set_id, _chunk_path(key).encode())
    n = len(local)
    read_rows(h5d.open(block, _LOCAL_NAME, NO_CHUNK_CACHE), n, local)
    read_rows(h5d.open(block, _GLOBAL_NAME, NO_CHUNK_CACHE), n, glob)


def _read_block(
    set_id: h5py.h5g.GroupID, key: KeyT, n: int
) -> tuple[np.ndarray, np.ndarray]:
    """The first ``n`` rows of a block as fresh arrays (empty if ``n`` is 0)."""
    local, glob = np.empty((n, 3), np.int64), np.empty((n, 3), np.int64)
    if n:
        _read_block_into(set_id, key, local, glob)
    return local, glob


class _Pin(NamedTuple):
    """An iteration axis pinned by the caller: chunk ids, and whether a single chunk
    (rather than a list of chunks) was given."""

    ids: tuple[int, ...]
    single: bool


def _is_single_chunk(value: Any) -> bool:
    if isinstance(value, Chunk):
        return True
    try:
        arr = np.asarray(value)
    except (TypeError, ValueError):
        return False
    return arr.shape == (3,) and arr.dtype.kind in "iuf"


def _as_pin(value: Any) -> _Pin | None:
    """``None`` (axis not pinned), one chunk, or an iterable of chunks."""
    if value is None:
        return None
    if _is_single_chunk(value):
        return _Pin((to_chunk(value).id,), True)
    return _Pin(tuple(c.id for c in chunklist(value)), False)


class _Index:
    """A set's block index, sorted by (direction, local id, global id); no data.

    Blocks with zero rows are left out, so every entry holds data.
    """

    def __init__(self, keys: np.ndarray, counts: np.ndarray):
        keys = np.asarray(keys, dtype=np.int64).reshape(-1, 3)
        counts = np.asarray(counts, dtype=np.int64)
        keep = counts > 0
        keys, counts = keys[keep], counts[keep]
        order = np.lexsort((keys[:, 2], keys[:, 1], keys[:, 0]))
        self.keys = keys[order]
        self.counts = counts[order]
        # Position of each block in the stored index, which lists blocks in the order
        # they were first written.
        self.written = np.flatnonzero(keep)[order]
        self._rows: dict[tuple[int, int, int], int] | None = None

    def span(self, d: int, local: int | None = None) -> tuple[int, int]:
        """Row range of direction ``d`` (and of one local chunk in it)."""
        col = self.keys[:, 0]
        lo = int(np.searchsorted(col, d, "left"))
        hi = int(np.searchsorted(col, d, "right"))
        if local is not None:
            sub = self.keys[lo:hi, 1]
            lo, hi = (
                lo + int(np.searchsorted(sub, local, "left")),
                lo + int(np.searchsorted(sub, local, "right")),
            )
        return lo, hi

    def local_totals(self, d: int) -> tuple[np.ndarray, np.ndarray]:
        """Sorted local chunk ids holding data in direction ``d``, and their rows."""
        lo, hi = self.span(d)
        local = self.keys[lo:hi, 1]
        if not len(local):
            return np.empty(0, np.int64), np.empty(0, np.int64)
        starts = np.flatnonzero(np.r_[True, local[1:] != local[:-1]])
        return local[starts], np.add.reduceat(self.counts[lo:hi], starts)

    def blocks(self, d: int, local: int) -> tuple[np.ndarray, np.ndarray]:
        """Sorted global chunk ids of one local chunk, and the rows of each block."""
        lo, hi = self.span(d, local)
        return self.keys[lo:hi, 2], self.counts[lo:hi]

    def blocks_as_written(self, d: int, local: int) -> tuple[np.ndarray, np.ndarray]:
        """The blocks of one local chunk in the order they were first written (as
        bsb-hdf5 stores a local chunk's rows), and the rows of each block."""
        lo, hi = self.span(d, local)
        first = np.argsort(self.written[lo:hi], kind="stable")
        return self.keys[lo:hi, 2][first], self.counts[lo:hi][first]

    def count(self, d: int, local: int, glob: int) -> int:
        """Rows of one block (0 if absent); a dict lookup, built on first use, since
        per-block reads ask this once per block."""
        if self._rows is None:
            self._rows = dict(zip(map(tuple, self.keys.tolist()), self.counts.tolist()))
        return self._rows.get((d, local, glob), 0)

    def total(self, d: int) -> int:
        lo, hi = self.span(d)
        return int(self.counts[lo:hi].sum())


class _SetView(NamedTuple):
    """What reads of one set need from an open root: its block index and the
    low-level id of its group (block paths are opened relative to it)."""

    index: _Index
    group: h5py.h5g.GroupID


class ConnectivitySet(Resource):
    """The connections between a presynaptic and a postsynaptic cell type.

    :param engine: the store.
    :param tag: the set's name; :class:`DatasetNotFoundError` if there is no such set.
    """

    def __init__(self, engine: HDF5Engine, tag: Any):
        name = parse_name(tag, "connectivity set")
        super().__init__(engine, f"{GROUP}/{name}")
        self._tag = name
        with engine._read() as f:
            g = f.get(self._path)
            if g is None:
                raise DatasetNotFoundError(
                    f"No connectivity set '{name}' in '{engine.root}'; it holds "
                    f"{sorted(f[GROUP])}.",
                    name=name,
                )
            self._pre = str(g.attrs["pre"])
            self._post = str(g.attrs["post"])

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} '{self._tag}' ({self._pre} -> {self._post}) "
            f"in {self._engine.root!r}>"
        )

    # -------------------------------------------------------------- set lifecycle
    @property
    def tag(self) -> str:
        return self._tag

    @property
    def pre_type_name(self) -> str:
        return self._pre

    @property
    def post_type_name(self) -> str:
        return self._post

    @staticmethod
    def exists(engine: HDF5Engine, tag: Any) -> bool:
        name = parse_name(tag, "connectivity set")
        with engine._read() as f:
            return f"{GROUP}/{name}" in f

    @classmethod
    def get_tags(cls, engine: HDF5Engine) -> list[str]:
        """The tags of every connectivity set in the store, sorted."""
        with engine._read() as f:
            return sorted(f[GROUP])

    @classmethod
    def create(
        cls, engine: HDF5Engine, pre_type: Any, post_type: Any, tag: Any = None
    ) -> ConnectivitySet:
        """Create an empty set (default tag ``"<pre>_to_<post>"``).

        :raises DatasetExistsError: the tag is taken.
        """
        pre, post, name = _parse_types(pre_type, post_type, tag)
        with engine._write() as txn:
            if f"{GROUP}/{name}" in txn.file:
                raise DatasetExistsError(
                    f"Connectivity set '{name}' already exists in '{engine.root}'.",
                    name=name,
                )
            _stage_new_set(txn, name, pre, post)
        return cls(engine, name)

    @classmethod
    def require(
        cls, engine: HDF5Engine, pre_type: Any, post_type: Any, tag: Any = None
    ) -> ConnectivitySet:
        """Get or create; safe when several processes call it at once (the set is
        created inside the exclusive root transaction after checking again).

        :raises TypeMismatchError: the set exists with other pre/post type names.
        """
        pre, post, name = _parse_types(pre_type, post_type, tag)
        path = f"{GROUP}/{name}"
        with engine._read() as f:
            g = f.get(path)
            stored = None if g is None else (str(g.attrs["pre"]), str(g.attrs["post"]))
        if stored is None:
            with engine._write() as txn:
                g = txn.file.get(path)
                if g is None:
                    _stage_new_set(txn, name, pre, post)
                else:
                    stored = (str(g.attrs["pre"]), str(g.attrs["post"]))
        if stored is not None and stored != (pre, post):
            raise TypeMismatchError(
                f"Connectivity set '{name}' in '{engine.root}' connects {stored[0]} -> "
                f"{stored[1]}, not {pre} -> {post}.",
                name=name,
                stored=stored,
                given=(pre, post),
            )
        return cls(engine, name)

    def remove(self) -> None:
        """Delete the set and everything in it."""
        with self._engine._write() as txn:
            if self._path in txn.file:
                txn.delete(self._path)

    def clear(self, chunks: Any = None) -> None:
        """Remove every connection, or every connection whose presynaptic *or*
        postsynaptic chunk is in ``chunks`` (both directions, so ``inc`` and ``out``
        keep mirroring each other; an empty list clears nothing). Idempotent."""
        pin = _as_pin(chunks)
        with self._engine._write() as txn:
            g = self._group(txn.file)
            if pin is None:
                _stage_new_set(
                    txn,
                    self._tag,
                    self._pre,
                    self._post,
                    str(g.attrs.get("created_at", now_iso())),
                )
                return
            ids = set(pin.ids)
            table = ChunkTable(g, _chunk_path)
            gone = [k for k in table.keys if k[1] in ids or k[2] in ids]
            table.drop(txn, self._path, gone)

    # ------------------------------------------------------------------ appending
    def chunk_connect(
        self, src_chunk: Any, dst_chunk: Any, src_locs: Any, dst_locs: Any
    ) -> None:
        """Append one block: ``src_locs[i]`` (cell ids relative to ``src_chunk``)
        connects to ``dst_locs[i]`` (relative to ``dst_chunk``). One atomic append;
        empty input stores nothing.

        :raises ShapeError: unequal lengths, or rows that are not ``[cell, branch,
            point]``.
        :raises DtypeError: non-integer locations.
        """
        src, dst = to_chunk(src_chunk), to_chunk(dst_chunk)
        s, t = _as_pair(src_locs, dst_locs, self._tag)
        if not len(s):
            return
        self._engine._check_writable()
        records = self._size_records(src, dst)
        records.extend(_block_records(self._tag, src.id, dst.id, s, t))
        self._engine._append(records)

    def connect(self, pre_set: Any, post_set: Any, src_locs: Any, dst_locs: Any) -> None:
        """Connect cells given by their index in each placement set's current view
        (chunk filter and label filter), split into chunk blocks, as ONE append call.
        Rows keep their input order within a block, except when the presynaptic view
        covers exactly one chunk: then each block is sorted by (postsynaptic cell,
        presynaptic cell), stably, which is the order BSB's reference engine stores.

        :raises LocationOutOfBoundsError: an id is outside a view (nothing is stored).
        """
        s, t = _as_pair(src_locs, dst_locs, self._tag, check_cells=False)
        if not len(s):
            return
        # One read scope under the shared lock: both views come from one store state.
        with self._engine.read_scope(), self._engine._read():
            pre, post = _ViewMap.of(pre_set), _ViewMap.of(post_set)
        _check_bounds(
            self._tag,
            (pre, s, "presynaptic (src_locs)"),
            (post, t, "postsynaptic (dst_locs)"),
        )
        src_cid, s_cells = pre.resolve(s[:, 0])
        dst_cid, t_cells = post.resolve(t[:, 0])
        s[:, 0], t[:, 0] = s_cells, t_cells  # private copies: chunk-local cell ids
        records: list[Record] = []
        for sid, did, rows in _demux(src_cid, dst_cid):
            if pre.single_chunk:
                # BSB's order: a presynaptic view of one chunk stores each block's
                # rows sorted by (postsynaptic cell, presynaptic cell), ties kept in
                # input order (bsb-hdf5 does; FuseConnectivity relies on it).
                rows = rows[np.lexsort((s_cells[rows], t_cells[rows]))]
            records.extend(_block_records(self._tag, sid, did, s[rows], t[rows]))
        self._engine._append(records)

    def _size_records(self, src: Chunk, dst: Chunk) -> list[Record]:
        sizes = [c.size for c in (src, dst) if c.size is not None]
        if len(sizes) == 2 and not np.allclose(sizes[0], sizes[1]):
            raise ChunkSizeError(
                f"chunk_connect on '{self._tag}': the source chunk {src!r} and the "
                f"destination chunk {dst!r} have different sizes.",
                given=tuple(sizes),
            )
        return self._engine._check_chunk_size(sizes[0] if sizes else None)

    # -------------------------------------------------------------------- reading
    def _group(self, f: h5py.File) -> h5py.Group:
        g = f.get(self._path)
        if g is None:
            raise DatasetNotFoundError(
                f"Connectivity set '{self._tag}' was removed from '{self._engine.root}'.",
                name=self._tag,
            )
        return g

    def _index(self) -> _Index:
        """The block index (see :meth:`_index_in`)."""
        with self._engine._read() as f:
            return self._index_in(f)

    def _snapshot(self) -> tuple[_Index, tuple[float, float, float] | None]:
        """The block index and the store's chunk size, from one read."""
        with self._engine._read() as f:
            return self._index_in(f), self._engine._st.chunk_size

    def _index_in(self, f: h5py.File) -> _Index:
        """The block index of an open root (see :meth:`_view_in`)."""
        return self._view_in(f).index

    def _view_in(self, f: h5py.File) -> _SetView:
        """The set's index and group id in an open root. For the engine's read handle
        they are looked up once per read generation: the handle is reopened, and its
        cache dropped, whenever a transaction was published (by any process, merges
        included), so a per-block call reads no index, checks no store state and
        resolves no group path."""
        st = self._engine._st
        if f is st.handle:
            return st.cached(("connectivity", self._path), lambda: self._load_view(f))
        return self._load_view(f)

    def _load_view(self, f: h5py.File) -> _SetView:
        g = self._group(f)
        return _SetView(_Index(g["index/key"][()], g["index/count"][()]), g.id)

    @staticmethod
    def _chunks(
        ids: Iterable[int], size: tuple[float, float, float] | None
    ) -> list[Chunk]:
        """Chunks of ``ids`` carrying the store's chunk ``size``."""
        return [Chunk.from_id(int(c), size) for c in ids]

    def _direction(self, direction: Any) -> int:
        if isinstance(direction, str) and direction in DIRECTIONS:
            return DIRECTIONS.index(direction)
        raise InvalidInputError(
            f"Invalid direction {direction!r} for connectivity set '{self._tag}': "
            "expected 'inc' or 'out'.",
            name=self._tag,
            direction=direction,
        )

    def _read_blocks(
        self, plan: Iterable[tuple[KeyT, int]]
    ) -> Iterator[tuple[KeyT, tuple[np.ndarray, np.ndarray]]]:
        """Lazily read the blocks of ``plan`` (key, snapshot row count), a few at a
        time: at most :data:`READ_BATCH_ROWS` rows (or one larger block) or
        :data:`READ_BATCH_BLOCKS` blocks are in memory per read. A block cleared since
        its count was taken reads as empty."""
        batch: list[tuple[KeyT, int]] = []
        rows = 0
        for key, n in plan:
            if batch and (rows + n > READ_BATCH_ROWS or len(batch) >= READ_BATCH_BLOCKS):
                yield from self._read_batch(batch)
                batch, rows = [], 0
            batch.append((key, n))
            rows += n
        if batch:
            yield from self._read_batch(batch)

    def _read_batch(
        self, batch: list[tuple[KeyT, int]]
    ) -> Iterator[tuple[KeyT, tuple[np.ndarray, np.ndarray]]]:
        with self._engine._read() as f:
            index, set_id = self._view_in(f)
            # Never past the count published now (the block may have been cleared
            # since ``n`` was taken; rows past the count are not published data).
            data = [
                _read_block(set_id, k, min(n, index.count(*k)) if n else 0)
                for k, n in batch
            ]
        yield from zip((k for k, _ in batch), data)

    def __len__(self) -> int:
        """The number of connections (from the index; no data is read)."""
        return self._index().total(1)

    def get_chunk_stats(self) -> dict[str, dict[str, int]]:
        """``{str(local chunk id): {"inc": rows, "out": rows}}`` in ascending id order."""
        index = self._index()
        stats: dict[int, dict[str, int]] = {}
        for d, name in enumerate(DIRECTIONS):
            for cid, n in zip(*index.local_totals(d)):
                stats.setdefault(int(cid), {"inc": 0, "out": 0})[name] = int(n)
        return {str(k): stats[k] for k in sorted(stats)}

    def get_local_chunks(self, direction: str) -> list[Chunk]:
        """The local chunks holding data in ``direction``, sorted by id."""
        d = self._direction(direction)
        index, size = self._snapshot()
        return self._chunks(index.local_totals(d)[0], size)

    def get_global_chunks(self, direction: str, local_: Any) -> list[Chunk]:
        """The global chunks ``local_`` has data with, sorted (empty if none)."""
        d = self._direction(direction)
        lid = to_chunk(local_).id
        index, size = self._snapshot()
        return self._chunks(index.blocks(d, lid)[0], size)

    def load_block_connections(
        self, direction: str, local_: Any, global_: Any
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(local_locs, global_locs)`` of one block, int64 (M, 3); empty if absent."""
        d = self._direction(direction)
        lid, gid = to_chunk(local_).id, to_chunk(global_).id
        with self._engine._read() as f:
            index, set_id = self._view_in(f)
            return _read_block(set_id, (d, lid, gid), index.count(d, lid, gid))

    def load_local_connections(
        self, direction: str, local_: Any
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every block of a local chunk, in the order each global chunk was first
        connected to it (BSB's order: bsb-hdf5 keeps a local chunk's rows that way):
        ``(local_locs, global chunk id per row (int64), global_locs)``; empty arrays
        if absent."""
        d = self._direction(direction)
        lid = to_chunk(local_).id
        with self._engine._read() as f:
            index, set_id = self._view_in(f)
            gids, counts = index.blocks_as_written(d, lid)
            total = int(counts.sum())
            local = np.empty((total, 3), np.int64)
            glob = np.empty((total, 3), np.int64)
            start = 0
            for gid, n in zip(gids.tolist(), counts.tolist()):
                end = start + n
                _read_block_into(set_id, (d, lid, gid), local[start:end], glob[start:end])
                start = end
        return local, np.repeat(gids, counts).astype(np.int64), glob

    def flat_iter_connections(
        self, direction: str | None = None, local_: Any = None, global_: Any = None
    ) -> Iterator[tuple[str, Chunk, Chunk, tuple[np.ndarray, np.ndarray]]]:
        """Generator of ``(direction, local chunk, global chunk, (local_locs,
        global_locs))``: ``"inc"`` then ``"out"``, chunks by ascending id, reading a
        few blocks at a time (bounded memory). A given argument pins its axis (a chunk
        or a list of chunks); pinned chunks are visited even where they hold no data
        (empty blocks), as in bsb-hdf5. The blocks are those of the store when
        iteration starts."""
        dirs = (0, 1) if direction is None else (self._direction(direction),)
        return self._flat(dirs, _as_pin(local_), _as_pin(global_))

    def _flat(
        self, dirs: tuple[int, ...], lpin: _Pin | None, gpin: _Pin | None
    ) -> Iterator[tuple[str, Chunk, Chunk, tuple[np.ndarray, np.ndarray]]]:
        index, size = self._snapshot()

        def plan() -> Iterator[tuple[KeyT, int]]:
            for d in dirs:
                lids = index.local_totals(d)[0] if lpin is None else lpin.ids
                for lid in lids:
                    for gid, n in _global_axis(index, d, int(lid), gpin):
                        yield (d, int(lid), gid), n

        for (d, lid, gid), data in self._read_blocks(plan()):
            yield DIRECTIONS[d], Chunk.from_id(lid, size), Chunk.from_id(gid, size), data

    def nested_iter_connections(
        self, direction: str | None = None, local_: Any = None, global_: Any = None
    ) -> Iterable[Any]:
        """Nested iterables ``(direction, it)`` -> ``(local chunk, it)`` ->
        ``(global chunk, (local_locs, global_locs))``, in the order of
        :meth:`flat_iter_connections`. A direction, or a *single* chunk, given for an
        axis removes that nesting level; a list of chunks restricts the level."""
        d = None if direction is None else self._direction(direction)
        return _Nested(self, d, _as_pin(local_), _as_pin(global_))


def _global_axis(
    index: _Index, d: int, lid: int, gpin: _Pin | None
) -> list[tuple[int, int]]:
    """(global id, rows) pairs to visit for one local chunk."""
    if gpin is None:
        return [(int(g), int(n)) for g, n in zip(*index.blocks(d, lid))]
    return [(g, index.count(d, lid, g)) for g in gpin.ids]


class _Nested:
    """One level of :meth:`ConnectivitySet.nested_iter_connections` (lazy and
    re-iterable)."""

    def __init__(
        self, cs: ConnectivitySet, d: int | None, lpin: _Pin | None, gpin: _Pin | None
    ):
        self._cs, self._d, self._lpin, self._gpin = cs, d, lpin, gpin

    def __iter__(self) -> Iterator[Any]:
        cs, d, lpin, gpin = self._cs, self._d, self._lpin, self._gpin
        if d is None:
            for i, name in enumerate(DIRECTIONS):
                yield name, _Nested(cs, i, lpin, gpin)
            return
        index, size = cs._snapshot()
        if lpin is None or not lpin.single:
            lids = index.local_totals(d)[0] if lpin is None else lpin.ids
            for lid, chunk in zip(lids, cs._chunks(lids, size)):
                yield chunk, _Nested(cs, d, _Pin((int(lid),), True), gpin)
            return
        lid = lpin.ids[0]
        if gpin is None or not gpin.single:
            pairs = _global_axis(index, d, lid, gpin)
            chunks = cs._chunks((g for g, _ in pairs), size)
            blocks = cs._read_blocks(((d, lid, g), n) for g, n in pairs)
            for chunk, (_, data) in zip(chunks, blocks):
                yield chunk, data
            return
        gid = gpin.ids[0]
        for _, data in cs._read_blocks([((d, lid, gid), index.count(d, lid, gid))]):
            yield data


# ------------------------------------------------------------------------- helpers
def _parse_types(pre_type: Any, post_type: Any, tag: Any) -> tuple[str, str, str]:
    pre = parse_name(pre_type, "presynaptic cell type")
    post = parse_name(post_type, "postsynaptic cell type")
    name = f"{pre}_to_{post}" if tag is None else parse_name(tag, "connectivity set")
    return pre, post, name


def _stage_new_set(
    txn: Transaction, name: str, pre: str, post: str, created_at: str | None = None
) -> None:
    """Stage an empty set and publish it at ``connectivity/<name>`` (replacing it)."""
    staged = txn.staging_path()
    g = txn.file.create_group(staged)
    create_index(g, 3)
    g.attrs["columns"] = json.dumps(
        {
            p.name: {
                "dtype": np.dtype(p.dtype).str,
                "shape": list(p.shape),
                "fill": p.fill,
            }
            for p in (LOCAL_LOCS, GLOBAL_LOCS)
        }
    )
    for d in DIRECTIONS:
        g.create_group(d)
    g.attrs["pre"] = pre
    g.attrs["post"] = post
    g.attrs["tag"] = name
    g.attrs["created_at"] = created_at or now_iso()
    txn.replace(staged, f"{GROUP}/{name}")


def _as_locs(value: Any, what: str, tag: str, check_cells: bool) -> np.ndarray:
    """A validated, private int64 (n, 3) copy of connection locations (branch and
    point ids >= -1; with ``check_cells`` also cell ids >= 0)."""
    arr = as_locations(value, what)
    bad = np.any(arr[:, 1:] < -1, axis=1)
    if check_cells:
        bad |= arr[:, 0] < 0
    if np.any(bad):
        row = int(np.flatnonzero(bad)[0])
        raise InvalidInputError(
            f"{what} for connectivity set '{tag}': row {row} is {arr[row].tolist()}; "
            "cell ids must be >= 0 and branch/point ids >= -1.",
            name=tag,
        )
    return np.array(arr, dtype=np.int64, copy=True)


def _as_pair(
    src_locs: Any, dst_locs: Any, tag: str, check_cells: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    s = _as_locs(src_locs, "src_locs", tag, check_cells)
    t = _as_locs(dst_locs, "dst_locs", tag, check_cells)
    if len(s) != len(t):
        raise ShapeError(
            f"Connectivity set '{tag}': {len(s)} source locations but {len(t)} "
            "destination locations; they must pair up one to one.",
            name=tag,
            lengths=(len(s), len(t)),
        )
    return s, t


def _block_records(
    tag: str, src_id: int, dst_id: int, s: np.ndarray, t: np.ndarray
) -> list[Record]:
    n = len(s)
    return [
        Record(("C", tag, "src"), src_id, dst_id, s, n),
        Record(("C", tag, "dst"), src_id, dst_id, t, n),
    ]


class _ViewMap:
    """Maps cell indices of a placement set view to (chunk id, index in chunk)."""

    def __init__(
        self, name: str, ids: np.ndarray, stats: dict[str, int], single_chunk: bool
    ):
        self.name = name
        self.ids = ids
        self.single_chunk = single_chunk
        pairs = sorted((int(k), int(v)) for k, v in stats.items())
        counts = np.asarray([v for _, v in pairs], dtype=np.int64)
        self.chunk_ids = np.asarray([k for k, _ in pairs], dtype=np.int64)
        self.ends = np.cumsum(counts)
        self.starts = self.ends - counts

    @classmethod
    def of(cls, ps: Any) -> _ViewMap:
        name = str(getattr(ps, "name", getattr(ps, "tag", ps)))
        ids = np.asarray(ps.load_ids(), dtype=np.int64).reshape(-1)
        single = len(ps.get_loaded_chunks()) == 1
        return cls(name, ids, ps.get_chunk_stats(), single)

    def out_of_bounds(self, cells: np.ndarray) -> np.ndarray:
        return cells[(cells < 0) | (cells >= len(self.ids))]

    def resolve(self, cells: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(chunk id, index within the chunk) of view indices ``cells`` (in bounds)."""
        gid = self.ids[cells]
        pos = np.searchsorted(self.ends, gid, side="right")
        return self.chunk_ids[pos], gid - self.starts[pos]


def _check_bounds(tag: str, *sides: tuple[_ViewMap, np.ndarray, str]) -> None:
    problems, details = [], {}
    for view, locs, side in sides:
        bad = view.out_of_bounds(locs[:, 0])
        if len(bad):
            problems.append(
                f"{side}: {len(bad)} cell ids out of [0, {len(view.ids)}) for placement "
                f"set '{view.name}', e.g. {np.unique(bad)[:10].tolist()}"
            )
            details[side.split()[0]] = np.unique(bad)[:10].tolist()
    if problems:
        raise LocationOutOfBoundsError(
            f"connect() on connectivity set '{tag}' got cell ids outside the placement "
            "set views; nothing was stored. " + "; ".join(problems) + ".",
            name=tag,
            **details,
        )


def _demux(
    src_cid: np.ndarray, dst_cid: np.ndarray
) -> Iterator[tuple[int, int, np.ndarray]]:
    """(source chunk, destination chunk, row indices) per block, blocks sorted by
    (source, destination) id, rows in input order (``connect`` may reorder them)."""
    order = np.lexsort((dst_cid, src_cid))
    sc, dc = src_cid[order], dst_cid[order]
    cuts = np.flatnonzero((sc[1:] != sc[:-1]) | (dc[1:] != dc[:-1])) + 1
    for a, b in zip(np.r_[0, cuts], np.r_[cuts, len(order)]):
        yield int(sc[a]), int(dc[a]), order[a:b]


# --------------------------------------------------------------------- consolidation
def _pair_records(
    records: list[Record],
) -> Iterator[tuple[int, int, np.ndarray, np.ndarray]]:
    """(source id, destination id, src rows, dst rows) of each block of one call."""
    pending: dict[tuple[int, int], list[np.ndarray]] = {}
    for rec in records:
        key = (rec.key0, rec.key1)
        if rec.stream[2] == "src":
            pending.setdefault(key, []).append(rec.rows)
        elif rec.stream[2] == "dst" and pending.get(key):
            yield rec.key0, rec.key1, pending[key].pop(0), rec.rows


def _append_block(
    table: ChunkTable, txn: Transaction, key: KeyT, local: np.ndarray, glob: np.ndarray
) -> None:
    """Stage one block's rows. A new block's group and datasets are created with its
    rows (no empty dataset, no resize, no lookup); the table sizes the HDF5 chunk to
    that first append."""
    if len(local):
        data = {LOCAL_LOCS.name: local, GLOBAL_LOCS.name: glob}
        table.append(txn, key, len(local), data, {})


def apply_connectivity(txn: Transaction, tag: str, calls: list[Call]) -> None:
    """Applier for kind ``"C"``: stage each block in both directions and publish the
    index. The table is kept in ``txn.memo``, so that if the applier runs more than
    once in a transaction, later calls append after the rows staged by earlier ones
    (the published index only changes at commit)."""
    path = f"{GROUP}/{tag}"
    g = txn.file.get(path)
    if g is None:
        merge.drop_calls(f"connectivity set '{tag}'", calls)
        return
    table = txn.memo.get(("C", tag))
    if table is None:
        table = txn.memo[("C", tag)] = ChunkTable(g, _chunk_path)
    for call in calls:
        for src_id, dst_id, s, t in _pair_records(call.records):
            _append_block(table, txn, (1, src_id, dst_id), s, t)
            _append_block(table, txn, (0, dst_id, src_id), t, s)
    table.publish(txn, path)


merge.register_applier("C", apply_connectivity)
