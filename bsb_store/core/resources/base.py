"""What every chunked resource shares: the index table and per-chunk column storage.

A chunked set (a placement set, a connectivity set) keeps, under its group:

* ``index/key``   int64 (K, w): the chunk key of each chunk group (w=1 for placement:
  the chunk id; w=3 for connectivity blocks: direction, local chunk, global chunk);
* ``index/count`` int64 (K,):  the logical row count of each chunk group;
* ``columns`` attribute: JSON ``{name: {"dtype", "shape", "fill"}}`` of the columns
  the set holds; every chunk group holds each of them with exactly ``count`` rows
  (rows an append did not give are filled), so columns always line up;
* one group per chunk key with one dataset per column. Datasets may be physically
  longer than ``count`` (rows staged by a transaction that did not publish); readers
  never look past ``count``.

Counts are numbers in a dataset, written once per transaction for the whole table (never
a JSON attribute per append), so an append's cost does not depend on how many chunks
the set holds.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import h5py
import numpy as np
from h5py import h5d, h5p, h5s, h5t

from ...exceptions import DtypeError, ShapeError
from ..writes.rows import write_rows
from ..writes.txn import Transaction

if TYPE_CHECKING:
    from ..engine import HDF5Engine

KeyT = tuple[int, ...]


class Resource:
    """A named object of a store: a path inside the root plus the engine it lives in."""

    def __init__(self, engine: HDF5Engine, path: str):
        self._engine = engine
        self._path = path

    @property
    def engine(self) -> HDF5Engine:
        return self._engine

    def __eq__(self, other: object) -> bool:
        return (
            type(self) is type(other)
            and self._engine == other._engine  # type: ignore[attr-defined]
            and self._path == other._path  # type: ignore[attr-defined]
        )

    def __hash__(self) -> int:
        return hash((type(self).__name__, self._engine.root, self._path))


def column_spec(rows: np.ndarray, fill: float) -> dict[str, Any]:
    return {"dtype": rows.dtype.str, "shape": list(rows.shape[1:]), "fill": fill}


def read_columns(group: h5py.Group) -> dict[str, dict[str, Any]]:
    raw = group.attrs.get("columns")
    return json.loads(raw) if raw is not None else {}


def create_index(group: h5py.Group, width: int) -> None:
    """Create the empty index of a new chunked set inside ``group``."""
    ix = group.create_group("index")
    ix.create_dataset("key", (0, width), dtype=np.int64, maxshape=(None, width))
    ix.create_dataset("count", (0,), dtype=np.int64, maxshape=(None,))
    group.attrs["columns"] = "{}"


class ChunkTable:
    """The in-memory view of one set's index plus its columns.

    Read from an open group; while a transaction appends, it also tracks the pending
    counts and new columns, and :meth:`publish` turns them into journal operations.
    """

    def __init__(self, group: h5py.Group, chunk_path: Callable[[KeyT], str]):
        self.group = group
        self.chunk_path = chunk_path
        keys = group["index/key"][()]
        counts = group["index/count"][()]
        self.width = keys.shape[1]
        self.keys: list[KeyT] = list(map(tuple, keys.tolist()))
        self.counts: list[int] = counts.tolist()
        self.rows = {k: i for i, k in enumerate(self.keys)}
        self.columns = read_columns(group)
        self._dirty = False
        self._new_columns: dict[str, dict[str, Any]] = {}

    @classmethod
    def open(cls, group: h5py.Group, chunk_path: Callable[[KeyT], str]) -> ChunkTable:
        return cls(group, chunk_path)

    # ------------------------------------------------------------------------ reads
    def count(self, key: KeyT) -> int:
        row = self.rows.get(key)
        return 0 if row is None else self.counts[row]

    def items(self) -> Iterable[tuple[KeyT, int]]:
        return zip(self.keys, self.counts)

    def read(self, keys: Sequence[KeyT], column: str) -> np.ndarray:
        """Concatenate ``column`` over ``keys`` (in the order given).

        The rows go straight into one preallocated array: one low-level open and one
        read per chunk, no intermediate arrays (the high-level ``group[path][:n]`` costs
        about three times as much per chunk, and this read is per chunk)."""
        spec = self.columns[column]
        counts = [self.count(key) for key in keys]
        out = np.empty((sum(counts), *spec["shape"]), dtype=np.dtype(spec["dtype"]))
        gid = self.group.id
        start = 0
        for key, n in zip(keys, counts):
            if n:
                path = f"{self.chunk_path(key)}/{column}"
                ds = open_dataset(gid, path)
                if ds is None:
                    raise KeyError(f"{self.group.name}/{path} is missing")
                read_rows(ds, n, out[start : start + n])
                start += n
        return out

    # ---------------------------------------------------------------------- appends
    def ensure_key(self, key: KeyT) -> tuple[h5py.Group, bool]:
        """Register a chunk key (with 0 rows) and create its group; returns the group
        and whether it is new (then it holds no column yet)."""
        path = self.chunk_path(key)
        if key in self.rows:
            return self.group.require_group(path), False
        self.rows[key] = len(self.keys)
        self.keys.append(key)
        self.counts.append(0)
        self._dirty = True
        try:
            return self.group.create_group(path), True
        except ValueError:  # an unregistered group (a 0.1 root's crash leftover)
            return self.group[path], False

    def append(
        self,
        txn: Transaction,
        key: KeyT,
        n: int,
        data: dict[str, np.ndarray],
        fills: dict[str, float],
    ) -> None:
        """Stage ``n`` rows for chunk ``key``: the given columns, and fill rows for the
        set's other columns. New columns are registered (and back-filled elsewhere)."""
        if n:
            # Validate everything before staging anything.
            for name, rows in data.items():
                if name in self.columns:
                    check_column(self.columns[name], rows, name)
        chunk, new = self.ensure_key(key)
        if not n:
            return  # an empty append creates the chunk, and no column
        for name, rows in data.items():
            if name not in self.columns:
                self._add_column(txn, name, column_spec(rows, fills.get(name, 0)))
        start = self.count(key)
        for name, spec in self.columns.items():
            rows = data.get(name)
            if rows is None:
                rows = _fill(spec, n)
            if new:  # created with its rows: no lookup, no resize
                _create_ds(chunk, name, spec, np.asarray(rows, dtype=spec["dtype"]))
            else:
                txn.stage_rows(_require_ds(chunk, name, spec, hint=n), start, rows)
        self.counts[self.rows[key]] = start + n
        self._dirty = True

    def declare(self, txn: Transaction, name: str, rows: np.ndarray, fill: float) -> None:
        """Register column ``name`` (its dtype and row shape from ``rows``, which may
        have no row) unless the set has it; chunks holding rows get fill rows."""
        if name not in self.columns:
            self._add_column(txn, name, column_spec(rows, fill))

    def _add_column(self, txn: Transaction, name: str, spec: dict[str, Any]) -> None:
        self.columns[name] = spec
        self._new_columns[name] = spec
        self._dirty = True
        for key, n in self.items():
            if n:
                chunk = self.group[self.chunk_path(key)]
                txn.stage_rows(_require_ds(chunk, name, spec, hint=n), 0, _fill(spec, n))

    def publish(self, txn: Transaction, path: str) -> None:
        """Turn the staged changes into journal operations (whole-table writes)."""
        if not self._dirty:
            return
        k = len(self.keys)
        keys = np.asarray(self.keys, dtype=np.int64).reshape(k, self.width)
        txn.resize(f"{path}/index/key", k)
        txn.write(f"{path}/index/key", 0, keys)
        txn.resize(f"{path}/index/count", k)
        txn.write(f"{path}/index/count", 0, np.asarray(self.counts, dtype=np.int64))
        if self._new_columns:
            txn.set_attr(path, "columns", json.dumps(self.columns))
        self._dirty = False
        self._new_columns = {}

    def register(
        self,
        txn: Transaction,
        path: str,
        name: str,
        dtype: str,
        shape: tuple[int, ...],
        fill: float,
    ) -> None:
        """Declare a column (back-filling existing chunks) and publish it."""
        if name not in self.columns:
            self._add_column(
                txn,
                name,
                {"dtype": np.dtype(dtype).str, "shape": list(shape), "fill": fill},
            )
            self.publish(txn, path)

    def overwrite(
        self,
        txn: Transaction,
        path: str,
        key: KeyT,
        name: str,
        rows: np.ndarray,
        fill: float = 0,
    ) -> None:
        """Replace column ``name`` of chunk ``key`` with ``rows`` (exactly ``count``
        rows), staged as a new dataset and swapped in on publish."""
        spec = self.columns.get(name)
        if spec is None:
            spec = column_spec(np.asarray(rows), fill)
            for other, n in self.items():
                if other != key and n:
                    staged = txn.staging_path()
                    _create_ds(txn.file, staged, spec, _fill(spec, n))
                    txn.replace(staged, f"{path}/{self.chunk_path(other)}/{name}")
            self.columns[name] = spec
            self._new_columns[name] = spec
            self._dirty = True
        else:
            check_column(spec, np.asarray(rows), name)
        staged = txn.staging_path()
        _create_ds(
            txn.file, staged, spec, np.asarray(rows, dtype=np.dtype(spec["dtype"]))
        )
        txn.replace(staged, f"{path}/{self.chunk_path(key)}/{name}")
        self.publish(txn, path)

    def drop(self, txn: Transaction, path: str, keys: Iterable[KeyT]) -> None:
        """Remove chunk keys from the table and delete their groups."""
        gone = set(keys) & set(self.rows)
        if not gone:
            return
        kept = [(k, c) for k, c in zip(self.keys, self.counts) if k not in gone]
        self.keys = [k for k, _ in kept]
        self.counts = [c for _, c in kept]
        self.rows = {k: i for i, k in enumerate(self.keys)}
        self._dirty = True
        self.publish(txn, path)
        for key in gone:
            txn.delete(f"{path}/{self.chunk_path(key)}")


def check_append(
    engine: HDF5Engine, path: str, columns: dict[str, np.ndarray], fills: dict[str, float]
) -> None:
    """Validate an append's columns against the set's columns (as last published, plus
    those this process introduced in appends not merged yet), so that a bad call raises
    at once instead of at merge time."""
    known = engine._known_columns(path)
    try:
        for name, rows in columns.items():
            if name in known:
                check_column(known[name], rows, name)
    except (ShapeError, DtypeError):
        # The cached specs may be stale (the set was cleared or recreated elsewhere):
        # the root's current specs win; columns only this process introduced stay.
        known = engine._known_columns(path, refresh=True)
        for name, rows in columns.items():
            if name in known:
                check_column(known[name], rows, name)
    for name, rows in columns.items():
        if name not in known and len(rows):
            known[name] = column_spec(rows, fills.get(name, 0))


def check_column(spec: dict[str, Any], rows: np.ndarray, name: str) -> None:
    shape = tuple(spec["shape"])
    if rows.shape[1:] != shape:
        raise ShapeError(
            f"Column '{name}' holds rows of shape {shape}, got rows of shape "
            f"{rows.shape[1:]}.",
            column=name,
        )
    if not np.can_cast(rows.dtype, np.dtype(spec["dtype"]), "same_kind"):
        raise DtypeError(
            f"Column '{name}' holds {np.dtype(spec['dtype'])}, cannot store {rows.dtype}.",
            column=name,
        )


def _uncached_access() -> h5p.PropDAID:
    """Dataset access properties without a chunk cache: a read covering whole chunks
    goes straight into the caller's array instead of through a per-dataset cache."""
    dapl = h5p.create(h5p.DATASET_ACCESS)
    dapl.set_chunk_cache(0, 0, 1.0)
    return dapl


#: Access properties for every read of a column dataset (see :func:`_uncached_access`).
NO_CHUNK_CACHE = _uncached_access()


def open_dataset(group: h5py.h5g.GroupID, path: str) -> h5d.DatasetID | None:
    """Open the dataset at ``path`` below ``group`` with the low-level API (no
    high-level object, no path checks), or ``None`` if it does not exist."""
    try:
        return h5d.open(group, path.encode(), NO_CHUNK_CACHE)
    except KeyError:
        return None


def read_rows(ds: h5d.DatasetID, n: int, out: np.ndarray) -> None:
    """Read the first ``n`` rows of ``ds`` into ``out`` (C-contiguous, ``n`` rows of
    the dataset's row shape). Rows past ``n`` (staged by a transaction that did not
    publish) are never read."""
    space = ds.get_space()
    dims = space.get_simple_extent_dims()
    if dims[0] == n:
        ds.read(h5s.ALL, h5s.ALL, out)
        return
    rest = tuple(dims[1:])
    space.select_hyperslab((0,) * len(dims), (n, *rest))
    ds.read(h5s.create_simple((n, *rest)), space, out)


def _fill(spec: dict[str, Any], n: int) -> np.ndarray:
    return np.full((n, *spec["shape"]), spec["fill"], dtype=np.dtype(spec["dtype"]))


#: Creation properties by HDF5 chunk shape, and HDF5 types by numpy dtype: a merge
#: creates thousands of column datasets, and building these per dataset (as h5py's
#: ``create_dataset`` does) costs more than creating the dataset itself.
_DCPLS: dict[tuple[int, ...], h5p.PropDCID] = {}
_TYPES: dict[np.dtype, h5t.TypeID] = {}


def _link_props(cset: int) -> h5p.PropLCID:
    lcpl = h5p.create(h5p.LINK_CREATE)
    lcpl.set_create_intermediate_group(True)  # staging paths, as h5py does
    lcpl.set_char_encoding(cset)
    return lcpl


#: Link creation properties for ASCII and for other (UTF-8) names, as h5py sets them.
_LCPLS = {True: _link_props(h5t.CSET_ASCII), False: _link_props(h5t.CSET_UTF8)}


def _column_dcpl(chunks: tuple[int, ...]) -> h5p.PropDCID:
    dcpl = _DCPLS.get(chunks)
    if dcpl is None:
        dcpl = h5p.create(h5p.DATASET_CREATE)
        dcpl.set_chunk(chunks)
        dcpl.set_obj_track_times(False)  # as h5py: files do not change with the clock
        _DCPLS[chunks] = dcpl
    return dcpl


def _column_type(dtype: np.dtype) -> h5t.TypeID:
    tid = _TYPES.get(dtype)
    if tid is None:
        tid = _TYPES[dtype] = h5t.py_create(dtype, logical=True)
    return tid


#: Bounds of an HDF5 chunk of a column dataset: at least this many rows ...
MIN_CHUNK_ROWS = 64
#: ... and at most this many bytes.
MAX_CHUNK_BYTES = 256 * 1024


def _chunk_rows(rows: int, row_bytes: int) -> int:
    """HDF5 chunk rows for a column whose first write holds ``rows`` rows: the write
    fills its chunks exactly (HDF5 allocates whole chunks, so a power of two above
    the row count cost up to 2x the bytes stored), split evenly into chunks of at
    most :data:`MAX_CHUNK_BYTES`; at least :data:`MIN_CHUNK_ROWS`, so that a set
    grown by many tiny appends does not become thousands of tiny chunks."""
    cap = max(MIN_CHUNK_ROWS, MAX_CHUNK_BYTES // max(1, row_bytes))
    if rows <= cap:
        return max(MIN_CHUNK_ROWS, rows)
    pieces = -(-rows // cap)
    return -(-rows // pieces)


def _create_ds(
    parent: h5py.Group,
    name: str,
    spec: dict[str, Any],
    data: np.ndarray | None = None,
    hint: int = 0,
) -> h5d.DatasetID:
    """A growable column dataset with a row-friendly chunk shape (h5py's automatic
    chunking picks odd shapes such as (512, 2) for (n, 3) data), holding ``data``,
    its HDF5 chunks sized by :func:`_chunk_rows` to the first write (``hint`` rows
    when there is no data). Created with the low-level API and cached property
    lists: one call per new chunk column."""
    shape = tuple(spec["shape"])
    dtype = np.dtype(spec["dtype"])
    row_bytes = max(1, int(np.prod(shape, dtype=int)) * dtype.itemsize)
    n = 0 if data is None else len(data)
    chunk_rows = _chunk_rows(max(n, hint), row_bytes)
    space = h5s.create_simple((n, *shape), (h5s.UNLIMITED, *shape))
    dsid = h5d.create(
        parent.id,
        name.encode(),
        _column_type(dtype),
        space,
        dcpl=_column_dcpl((chunk_rows, *shape)),
        lcpl=_LCPLS[name.isascii()],
    )
    if n:
        if dtype.kind in "OUS":
            write_rows(h5py.Dataset(dsid), 0, data, grow=False)
        else:
            dsid.write(h5s.ALL, h5s.ALL, np.ascontiguousarray(data, dtype=dtype))
    return dsid


def _require_ds(
    group: h5py.Group, name: str, spec: dict[str, Any], hint: int = 0
) -> h5py.Dataset:
    ds = group.get(name)
    return (
        ds if ds is not None else h5py.Dataset(_create_ds(group, name, spec, hint=hint))
    )
