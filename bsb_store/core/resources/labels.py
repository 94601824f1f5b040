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

if TYPE_CHECKING:
    from ..writes.txn import Transaction
    from .base import ChunkTable, KeyT

#: Name of the flat label column's group inside a placement set.
GROUP = "labels"
#: Name of the per-chunk column of the earlier layout.
LEGACY_COLUMN = "labels"
#: Above this many distinct source ids, first appearances are found by sorting.
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
        return np.isin(values, ids)

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
        (adding or removing the same labels again gives the same set)."""
        out = np.array(values, dtype=np.int64, copy=True)
        targets = np.asarray(targets, dtype=np.int64).reshape(-1)
        if not len(targets):
            return out
        src = out[targets]
        sources = _first_appearances(src)
        change = frozenset(labels)
        counter = (c for c in itertools.count() if c not in self.sets)
        dst = np.empty(len(sources), dtype=np.int64)
        for i, s in enumerate(sources.tolist()):
            current = self.labels_of(s)
            result = current | change if add else current - change
            dst[i] = s if result == current else self._find_or_add(result, counter)
        if np.array_equal(dst, sources):
            return out
        order = np.argsort(sources)
        out[targets] = dst[order][np.searchsorted(sources[order], src)]
        return out


def _first_appearances(values: np.ndarray) -> np.ndarray:
    """The distinct values of ``values`` in the order of their first appearance."""
    lo = int(values.min())
    hi = int(values.max())
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
        g = set_group.get(GROUP)
        if not isinstance(g, h5py.Group):
            return None
        return cls(g["keys"][()], g["counts"][()], g["values"])

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
        order given: stored rows, then 0 for rows (or chunks) stored since."""
        total = int(counts.sum())
        if self.covers(ids, counts):
            return np.asarray(self.values[()], dtype=np.int64)
        out = np.zeros(total, dtype=np.int64)
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


def read_labels(table: ChunkTable, keys: Sequence[KeyT]) -> np.ndarray:
    """The label-set id of every cell of chunks ``keys`` (in the order given) of the
    placement set whose chunk table is ``table``, whichever layout holds them."""
    stored = StoredLabels.open(table.group)
    if stored is not None:
        return stored.expand(*_layout(table, keys))
    if LEGACY_COLUMN in table.columns:
        return np.asarray(table.read(keys, LEGACY_COLUMN), dtype=np.int64)
    return np.zeros(sum(table.count(k) for k in keys), dtype=np.int64)


def write_labels(
    txn: Transaction,
    path: str,
    table: ChunkTable,
    keys: Sequence[KeyT],
    old: np.ndarray,
    new: np.ndarray,
    touched: np.ndarray | None = None,
) -> None:
    """Publish ``new`` as the ids of every cell of the set at ``path`` (``keys``: all
    of its chunks, ascending; ``old``: the ids :func:`read_labels` gave for them;
    ``touched``: the rows that may differ, if known, else every row is compared).

    When the stored snapshot covers exactly these chunks (and the new ids fit its
    type), the changed range of ``values`` is written in place (one ``write``
    operation: no new object, so the file does not grow per call); otherwise a new
    column is staged and swapped in whole (one ``replace``), and the per-chunk column
    of the earlier layout, if any, is dropped in the same transaction.
    """
    ids, counts = _layout(table, keys)
    stored = StoredLabels.open(table.group)
    if stored is not None and stored.covers(ids, counts):
        if touched is None:
            changed = np.flatnonzero(old != new)
        else:
            rows = np.asarray(touched, dtype=np.int64)
            changed = rows[old[rows] != new[rows]]
        if not len(changed):
            return
        lo, hi = int(changed.min()), int(changed.max()) + 1
        dtype = stored.values.dtype
        if int(new[changed].max()) <= np.iinfo(dtype).max:
            txn.write(f"{path}/{GROUP}/values", lo, new[lo:hi].astype(dtype))
            return
    _stage_column(txn, path, ids, counts, new)
    if LEGACY_COLUMN in table.columns:
        _drop_legacy(txn, path, table)


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
    values = np.asarray(values, dtype=np.int64)
    largest = int(values.max()) if len(values) else 0
    g.create_dataset("values", data=values.astype(_id_type(largest)))
    txn.replace(staged, f"{path}/{GROUP}")


def _drop_legacy(txn: Transaction, path: str, table: ChunkTable) -> None:
    """Remove the per-chunk label column of the earlier layout (registry and data)."""
    columns = {k: v for k, v in table.columns.items() if k != LEGACY_COLUMN}
    txn.set_attr(path, "columns", json.dumps(columns))
    for key in table.keys:
        if LEGACY_COLUMN in table.group.get(table.chunk_path(key), {}):
            txn.delete(f"{path}/{table.chunk_path(key)}/{LEGACY_COLUMN}")
