"""Label sets: per-cell label-set ids plus a table ``id -> set of labels``.

The semantics are BSB's ``EncodedLabels`` exactly, because ids and their order are
observable (``get_unique_labels`` returns sets in id order): id 0 is the empty set; when
labels are added to or removed from cells, each distinct source id transitions to the
id of the resulting set, which is an existing id when that set is known and otherwise
the lowest unused id, allocated in the order cells are visited. One table serves the
whole placement set.

On disk (this module owns the layout), the ids of a placement set are ONE flat column
next to the set's index, not a per-chunk column::

    placement/<set>/labels/
      keys    int64 (K,)  chunk ids, ascending
      counts  int64 (K,)  rows of each of those chunks held in ``values``
      values  uint8/16/32 or int64 (sum(counts),)  label-set id per cell, chunks in
              ``keys`` order; the narrowest type that holds the largest id

A cell that ``values`` does not hold (a chunk missing from ``keys``, or a row past its
chunk's ``counts``, i.e. appended after the last labelling call) is unlabelled (id 0).
So appends never touch the labels, and a labelling call reads one dataset and writes
back one contiguous range of it, however many chunks it touches: the cost of a call is
independent of the number of chunks (the per-chunk layout made one dataset per chunk
per call). The ``keys``/``counts`` snapshot is rewritten, with ``values``, only when the
set's chunks changed since the last labelling call (new cells, cleared chunks), or when
a new id outgrows the type of ``values``. A set rarely has more than 255 label sets, so
an id usually takes one byte: a call moves an eighth of the bytes int64 ids would (the
range written goes to the write session's undo log first, then in place).

Stores written before this layout keep their ids in a per-chunk column ``labels`` of the
set's chunk table (``chunks/<id>/labels``); they are read as such, and the first
labelling call moves them into the flat column.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import h5py
import numpy as np
from h5py import h5d, h5s

if TYPE_CHECKING:
    from ..writes.txn import Transaction
    from .base import ChunkTable, KeyT

#: Name of the flat label column's group inside a placement set.
GROUP = "labels"
#: Name of the per-chunk column of the earlier layout.
LEGACY_COLUMN = "labels"
#: Above this many distinct source ids, first appearances are found by sorting (and
#: below this many candidate ids, by one comparison per candidate).
_FEW_SOURCES = 16
#: The types ``values`` may have, narrowest first.
_ID_TYPES = (np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.uint32))


def _id_type(largest: int) -> np.dtype:
    """The narrowest stored type that holds ids up to ``largest``."""
    for dtype in _ID_TYPES:
        if largest <= np.iinfo(dtype).max:
            return dtype
    return np.dtype(np.int64)


class LabelSets:
    """The ``id -> frozenset(labels)`` table of one placement set."""

    def __init__(self, sets: dict[int, frozenset[str]] | None = None):
        self.sets: dict[int, frozenset[str]] = dict(sets or {0: frozenset()})

    @classmethod
    def decode(cls, raw: str | bytes | None) -> LabelSets:
        if raw is None:
            return cls()
        data = json.loads(raw)
        return cls({int(k): frozenset(v) for k, v in data.items()})

    def encode(self) -> str:
        return json.dumps({str(k): sorted(v) for k, v in sorted(self.sets.items())})

    def labels_of(self, id: int) -> frozenset[str]:
        return self.sets.get(id, frozenset())

    def mask(self, values: np.ndarray, labels: Iterable[str] | None) -> np.ndarray:
        """Cells whose set contains any of ``labels`` or equals them (``[]``: the
        unlabelled cells); ``None`` selects every cell."""
        if labels is None:
            return np.ones(len(values), dtype=bool)
        wanted = frozenset(labels)
        ids = [k for k, v in self.sets.items() if (v & wanted) or v == wanted]
        return select(values, ids)

    def _find_or_add(self, labels: frozenset[str], counter) -> int:
        for k, v in self.sets.items():
            if v == labels:
                return k
        new = next(counter)
        self.sets[new] = labels
        return new

    def apply(
        self, values: np.ndarray, targets: np.ndarray, labels: list[str], add: bool
    ) -> np.ndarray:
        """New per-cell values after adding/removing ``labels`` on cells ``targets``
        (indices into ``values``, visited in the order given).

        Vectorised, with the result of visiting the cells one by one: the transition
        of each distinct source id is decided in the order of its first appearance
        among the targets (which fixes the ids new sets get), then applied to every
        target at once. A cell listed twice changes once: transitions are idempotent
        (adding or removing the same labels again gives the same set).

        The result keeps the integer type of ``values`` (the stored ids are usually
        one byte each) unless a new id does not fit in it; then it is int64. ``values``
        itself is never modified."""
        values = np.asarray(values)
        if values.dtype.kind not in "iu":
            values = values.astype(np.int64)
        targets = np.asarray(targets, dtype=np.int64).reshape(-1)
        if not len(targets):
            return values.copy()
        src = np.take(values, targets)
        sources = _first_appearances(src)
        change = frozenset(labels)
        counter = (c for c in itertools.count() if c not in self.sets)
        dst = np.empty(len(sources), dtype=np.int64)
        for i, s in enumerate(sources.tolist()):
            current = self.labels_of(s)
            result = current | change if add else current - change
            dst[i] = s if result == current else self._find_or_add(result, counter)
        if np.array_equal(dst, sources):
            return values.copy()
        if int(dst.max()) <= np.iinfo(values.dtype).max:
            out = values.copy()
        else:
            out = values.astype(np.int64)
        hi = int(sources.max())
        if int(sources.min()) >= 0 and hi < max(1 << 16, len(targets)):
            # Every source id is small: a lookup table maps each target in one pass.
            lut = np.arange(hi + 1, dtype=out.dtype)
            lut[sources] = dst
            out[targets] = np.take(lut, src)
        else:
            order = np.argsort(sources)
            out[targets] = dst[order][np.searchsorted(sources[order], src)]
        return out


def present(values: np.ndarray) -> np.ndarray:
    """``np.unique(values)`` for label-set ids: by counting (no sort) when the ids are
    small, as stored ids are."""
    values = np.asarray(values)
    if not len(values):
        return np.unique(values)
    lo, hi = int(values.min()), int(values.max())
    if lo < 0 or hi >= max(1 << 16, len(values)):
        return np.unique(values)
    return np.flatnonzero(np.bincount(values, minlength=hi + 1))


def select(values: np.ndarray, ids: Iterable[int]) -> np.ndarray:
    """``np.isin(values, ids)`` for label-set ids: through a boolean lookup table
    indexed by the ids (one gather over ``values``; ``np.isin`` sorts or compares
    once per id) whenever the ids in ``values`` are small, as stored ids are."""
    ids = np.fromiter(ids, dtype=np.int64)
    values = np.asarray(values)
    if values.dtype.kind == "u" and values.dtype.itemsize <= 2:
        size = 1 << (8 * values.dtype.itemsize)
    elif not len(values):
        return np.zeros(0, dtype=bool)
    else:
        lo, hi = int(values.min()), int(values.max())
        if lo < 0 or hi >= max(1 << 16, len(values)):
            return np.isin(values, ids)
        size = hi + 1
    lut = np.zeros(size, dtype=bool)
    lut[ids[(ids >= 0) & (ids < size)]] = True
    return np.take(lut, values)


def _first_appearances(values: np.ndarray) -> np.ndarray:
    """The distinct values of ``values`` in the order of their first appearance."""
    lo = int(values.min())
    hi = int(values.max())
    if hi - lo < _FEW_SOURCES:
        # A narrow range: one comparison pass per candidate (cheaper than counting).
        found = []
        for v in range(lo, hi + 1):
            hit = values == v
            at = int(np.argmax(hit))
            if hit[at]:
                found.append((at, v))
        return np.asarray([v for _, v in sorted(found)], dtype=values.dtype)
    if lo >= 0 and hi < max(1 << 16, 4 * len(values)):
        present = np.flatnonzero(np.bincount(values, minlength=hi + 1))
        if len(present) <= _FEW_SOURCES:
            first = [int(np.argmax(values == v)) for v in present.tolist()]
            return present[np.argsort(first, kind="stable")]
    uniq, first = np.unique(values, return_index=True)
    return uniq[np.argsort(first, kind="stable")]


# ------------------------------------------------------------------ the flat column
@dataclass
class StoredLabels:
    """The flat label column of a set as stored: a snapshot of the chunks it covers."""

    keys: np.ndarray  # (K,) int64 chunk ids, ascending
    counts: np.ndarray  # (K,) int64 rows held per chunk
    values: h5py.Dataset  # (sum(counts),) ids, unsigned or int64 (see _id_type)

    @classmethod
    def open(cls, set_group: h5py.Group) -> StoredLabels | None:
        """The set's flat label column, or None when no labelling call stored one."""
        # Low-level opens and reads: this runs once or twice per labelling call and
        # per label read, and h5py's path lookups cost more than the reads here.
        gid = set_group.id
        try:
            keys = h5d.open(gid, f"{GROUP}/keys".encode())
        except KeyError:
            return None
        counts = h5d.open(gid, f"{GROUP}/counts".encode())
        values = h5d.open(gid, f"{GROUP}/values".encode())
        return cls(_read_all(keys), _read_all(counts), h5py.Dataset(values))

    def covers(self, ids: np.ndarray, counts: np.ndarray) -> bool:
        """Whether the snapshot holds exactly these chunks with these counts (then
        ``values`` is the column of those chunks as-is)."""
        return (
            np.array_equal(self.keys, ids)
            and np.array_equal(self.counts, counts)
            and self.values.shape == (int(counts.sum()),)
        )

    def expand(self, ids: np.ndarray, counts: np.ndarray) -> np.ndarray:
        """The ids of the cells of chunks ``ids`` holding ``counts`` cells now, in the
        order given: stored rows, then 0 for rows (or chunks) stored since. In the
        stored type of ``values`` (not widened: the ids are small)."""
        total = int(counts.sum())
        if self.covers(ids, counts):
            return self.values[()]
        out = np.zeros(total, dtype=self.values.dtype)
        if not len(self.keys) or not total:
            return out
        pos = np.minimum(np.searchsorted(self.keys, ids), len(self.keys) - 1)
        found = self.keys[pos] == ids
        held = np.where(found, np.minimum(self.counts[pos], counts), 0)
        if not held.any():
            return out
        offsets = np.concatenate([[0], np.cumsum(self.counts)])[:-1]
        src = _ranges(offsets[pos], held)
        dst = _ranges(np.concatenate([[0], np.cumsum(counts)])[:-1], held)
        lo, hi = int(src.min()), int(src.max()) + 1
        out[dst] = self.values[lo:hi][src - lo]
        return out


def _read_all(ds: h5d.DatasetID) -> np.ndarray:
    """The whole of a one-dimensional int64 dataset (``keys`` or ``counts``)."""
    out = np.empty(ds.shape, dtype=np.int64)
    if out.size:
        ds.read(h5s.ALL, h5s.ALL, out)
    return out


def _ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """``concatenate([arange(s, s + n) for s, n in zip(starts, lengths)])``, vectorised."""
    lengths = np.asarray(lengths, dtype=np.int64)
    total = int(lengths.sum())
    if not total:
        return np.empty(0, dtype=np.int64)
    ends = np.cumsum(lengths)
    shift = np.repeat(np.asarray(starts, dtype=np.int64) - (ends - lengths), lengths)
    return np.arange(total, dtype=np.int64) + shift


def _layout(table: ChunkTable, keys: Sequence[KeyT]) -> tuple[np.ndarray, np.ndarray]:
    """(chunk ids, current cell counts) of ``keys`` (0 cells for keys the table lacks),
    without a Python call per chunk."""
    every = np.fromiter((k[0] for k in table.keys), dtype=np.int64, count=len(table.keys))
    counts = np.asarray(table.counts, dtype=np.int64).reshape(-1)
    ids = np.fromiter((k[0] for k in keys), dtype=np.int64, count=len(keys))
    if np.array_equal(ids, every):
        return ids, counts
    if not len(every):
        return ids, np.zeros(len(ids), dtype=np.int64)
    order = np.argsort(every, kind="stable")
    pos = np.minimum(np.searchsorted(every[order], ids), len(every) - 1)
    found = every[order][pos] == ids
    return ids, np.where(found, counts[order][pos], 0)


@dataclass
class LabelColumn:
    """The ids of the cells of some chunks of a set, as read, with what was read to
    find them (so that :func:`write_labels` need not read it again)."""

    ids: np.ndarray  # (K,) int64 chunk ids, in the order asked for
    counts: np.ndarray  # (K,) int64 cells each of those chunks holds now
    stored: StoredLabels | None  # the flat column, if the set has one
    values: np.ndarray  # (sum(counts),) label-set id per cell (see read_labels)


def load_labels(table: ChunkTable, keys: Sequence[KeyT]) -> LabelColumn:
    """:func:`read_labels`, with the layout and snapshot it read."""
    ids, counts = _layout(table, keys)
    stored = StoredLabels.open(table.group)
    if stored is not None:
        values = stored.expand(ids, counts)
    elif LEGACY_COLUMN in table.columns:
        values = np.asarray(table.read(keys, LEGACY_COLUMN), dtype=np.int64)
    else:
        values = np.zeros(int(counts.sum()), dtype=np.uint8)
    return LabelColumn(ids, counts, stored, values)


def read_labels(table: ChunkTable, keys: Sequence[KeyT]) -> np.ndarray:
    """The label-set id of every cell of chunks ``keys`` (in the order given) of the
    placement set whose chunk table is ``table``, whichever layout holds them.

    An unsigned or int64 integer array: the flat column's stored type as-is (ids are
    usually one byte each; widening them would cost more than reading them)."""
    return load_labels(table, keys).values


def write_labels(
    txn: Transaction,
    path: str,
    table: ChunkTable,
    keys: Sequence[KeyT],
    old: np.ndarray,
    new: np.ndarray,
    touched: np.ndarray | None = None,
    column: LabelColumn | None = None,
) -> None:
    """Publish ``new`` as the ids of every cell of the set at ``path`` (``keys``: all
    of its chunks, ascending; ``old``: the ids :func:`read_labels` gave for them;
    ``touched``: the rows that may differ, if known, else every row is compared;
    ``column``: what :func:`load_labels` gave for ``keys`` in this transaction, if at
    hand: then the layout and snapshot are not read again).

    When the stored snapshot covers exactly these chunks (and the new ids fit its
    type), the changed range of ``values`` is written in place (one ``write``
    operation: no new object, so the file does not grow per call); otherwise a new
    column is staged and swapped in whole (one ``replace``), and the per-chunk column
    of the earlier layout, if any, is dropped in the same transaction.
    """
    if column is None:
        ids, counts = _layout(table, keys)
        stored = StoredLabels.open(table.group)
    else:
        ids, counts, stored = column.ids, column.counts, column.stored
    if stored is not None and stored.covers(ids, counts):
        if touched is None:
            changed = np.flatnonzero(old != new)
        else:
            rows = np.asarray(touched, dtype=np.int64)
            changed = rows[np.take(old, rows) != np.take(new, rows)]
        if not len(changed):
            return
        lo, hi = int(changed.min()), int(changed.max()) + 1
        dtype = stored.values.dtype
        if _fits(new, changed, dtype):
            txn.write(f"{path}/{GROUP}/values", lo, new[lo:hi].astype(dtype, copy=False))
            return
    _stage_column(txn, path, ids, counts, new)
    if LEGACY_COLUMN in table.columns:
        _drop_legacy(txn, path, table)


def _fits(new: np.ndarray, changed: np.ndarray, dtype: np.dtype) -> bool:
    """Whether the ids ``new[changed]`` (the others are stored already) fit ``dtype``;
    without looking at them when the type of ``new`` does."""
    if np.can_cast(new.dtype, dtype, "safe"):
        return True
    return int(np.take(new, changed).max()) <= np.iinfo(dtype).max


def drop_chunks(
    txn: Transaction, path: str, set_group: h5py.Group, chunk_ids: Iterable[int]
) -> None:
    """Forget the stored ids of chunks ``chunk_ids`` (their cells are being removed), so
    that cells appended to those chunks later start unlabelled."""
    stored = StoredLabels.open(set_group)
    if stored is None:
        return
    gone = np.isin(stored.keys, np.fromiter(chunk_ids, dtype=np.int64))
    if not gone.any():
        return
    if gone.all():
        txn.delete(f"{path}/{GROUP}")
        return
    keep = ~gone
    offsets = np.concatenate([[0], np.cumsum(stored.counts)])[:-1]
    rows = _ranges(offsets[keep], stored.counts[keep])
    values = stored.values[()][rows].astype(np.int64)
    _stage_column(txn, path, stored.keys[keep], stored.counts[keep], values)


def _stage_column(
    txn: Transaction, path: str, ids: np.ndarray, counts: np.ndarray, values: np.ndarray
) -> None:
    staged = txn.staging_path()
    g = txn.file.create_group(staged)
    g.create_dataset("keys", data=np.asarray(ids, dtype=np.int64))
    g.create_dataset("counts", data=np.asarray(counts, dtype=np.int64))
    values = np.asarray(values)
    largest = int(values.max()) if len(values) else 0
    g.create_dataset("values", data=values.astype(_id_type(largest), copy=False))
    txn.replace(staged, f"{path}/{GROUP}")


def _drop_legacy(txn: Transaction, path: str, table: ChunkTable) -> None:
    """Remove the per-chunk label column of the earlier layout (registry and data)."""
    columns = {k: v for k, v in table.columns.items() if k != LEGACY_COLUMN}
    txn.set_attr(path, "columns", json.dumps(columns))
    for key in table.keys:
        if LEGACY_COLUMN in table.group.get(table.chunk_path(key), {}):
            txn.delete(f"{path}/{table.chunk_path(key)}/{LEGACY_COLUMN}")
