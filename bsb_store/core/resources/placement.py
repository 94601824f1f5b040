"""PlacementSet: the cells of one cell type, chunk by chunk.

Global cell order is BSB's: chunks by ascending id, then insertion order within a chunk.
Appends go through the engine's shard write path (no lock another process holds);
labelling, clearing and removal are root transactions that resolve cell ids *inside*
the transaction, after every returned append has been merged, so ids never shift under
a labelling call.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import h5py
import numpy as np

from ...exceptions import (
    DatasetExistsError,
    DatasetNotFoundError,
    DtypeError,
    InvalidInputError,
    LabellingError,
    ShapeError,
)
from ..chunks import ChunkedCollection, ChunkedProperty, ChunkLoader, to_chunk
from ..writes import consolidate as merge
from ..writes.shard import Call, Record
from ..writes.txn import Transaction
from . import labels as _labels
from .base import ChunkTable, KeyT, Resource, check_append, create_index
from .labels import LabelSets
from .validate import as_float_rows, as_index_rows, parse_name

if TYPE_CHECKING:
    from ..engine import HDF5Engine

GROUP = "placement"
POSITION = ChunkedProperty("position", "<f8", (3,), np.nan)
ROTATION = ChunkedProperty("rotation", "<f8", (3,), 0.0)
MORPHOLOGY = ChunkedProperty("morphology", "<i8", (), -1)
LABELS = ChunkedProperty("labels", "<i8", (), 0)
ADDITIONAL = ChunkedCollection("additional", np.nan)


def _chunk_path(key: KeyT) -> str:
    return f"chunks/{key[0]}"


def _additional_column(key: str) -> str:
    return "additional:" + key


class PlacementSet(ChunkLoader, Resource):
    """The placement data of one cell type in a store (numpy in, numpy out)."""

    def __init__(self, engine: HDF5Engine, cell_type: Any):
        name = parse_name(cell_type, "cell type")
        super().__init__(engine, f"{GROUP}/{name}")
        self._name = name
        self._label_filter: list[str] | None = None
        if not self.exists(engine, name):
            raise DatasetNotFoundError(
                f"No placement set '{name}' in '{engine.root}'.", name=name
            )

    # -------------------------------------------------------------- set lifecycle
    @property
    def tag(self) -> str:
        return self._name

    @property
    def name(self) -> str:
        return self._name

    @staticmethod
    def exists(engine: HDF5Engine, cell_type: Any) -> bool:
        name = parse_name(cell_type, "cell type")
        with engine._read() as f:
            return f"{GROUP}/{name}" in f

    @classmethod
    def list(cls, engine: HDF5Engine) -> list[str]:
        """The names of every placement set in the store."""
        with engine._read() as f:
            return sorted(f[GROUP])

    @classmethod
    def create(cls, engine: HDF5Engine, cell_type: Any) -> PlacementSet:
        """Create an empty set; :class:`DatasetExistsError` if it exists."""
        name = parse_name(cell_type, "cell type")
        with engine._write() as txn:
            if f"{GROUP}/{name}" in txn.file:
                raise DatasetExistsError(
                    f"Placement set '{name}' already exists in '{engine.root}'.",
                    name=name,
                )
            _stage_new_set(txn, name)
        return cls(engine, name)

    @classmethod
    def require(cls, engine: HDF5Engine, cell_type: Any) -> PlacementSet:
        """Get or create; safe when every rank calls it at the same moment."""
        name = parse_name(cell_type, "cell type")
        if not cls.exists(engine, name):
            with engine._write() as txn:
                if f"{GROUP}/{name}" not in txn.file:
                    _stage_new_set(txn, name)
        return cls(engine, name)

    def remove(self) -> None:
        """Delete the set and everything in it."""
        with self._engine._write() as txn:
            if self._path in txn.file:
                txn.delete(self._path)

    def clear(self, chunks: Iterable[Any] | None = None) -> None:
        """Remove every cell, or only the cells of ``chunks`` (their chunks disappear)."""
        with self._engine._write() as txn:
            table = self._table(txn.file)
            keys = (
                list(table.keys)
                if chunks is None
                else [(to_chunk(c).id,) for c in chunks]
            )
            _labels.drop_chunks(txn, self._path, table.group, (k[0] for k in keys))
            table.drop(txn, self._path, keys)

    # ------------------------------------------------------------------- reading
    def _group(self, f: h5py.File) -> h5py.Group:
        g = f.get(self._path)
        if g is None:
            raise DatasetNotFoundError(
                f"Placement set '{self._name}' was removed from '{self._engine.root}'.",
                name=self._name,
            )
        return g

    def _table(self, f: h5py.File) -> ChunkTable:
        """The set's index; parsed once per root generation for reads."""
        st = self._engine._st
        if f is st.handle:
            return st.cached(
                ("table", self._path), lambda: ChunkTable(self._group(f), _chunk_path)
            )
        return ChunkTable(self._group(f), _chunk_path)

    def _stored_chunk_ids(self) -> list[int]:
        with self._engine._read() as f:
            return [k[0] for k in self._table(f).keys]

    def _chunk_size(self):
        return self._engine._chunk_size()

    def _view(self, f: h5py.File, labels: bool = True):
        """(table, view chunk keys, label mask or None) of the current filters."""
        table = self._table(f)
        keys = [(c,) for c in self._view_chunk_ids([k[0] for k in table.keys])]
        mask = None
        if labels and self._label_filter is not None:
            mask = self._label_sets(f).mask(
                self._read_labels(table, keys), self._label_filter
            )
        return table, keys, mask

    def _read_labels(self, table: ChunkTable, keys: Sequence[KeyT]) -> np.ndarray:
        return _labels.read_labels(table, keys)

    def _label_sets(self, f: h5py.File) -> LabelSets:
        return LabelSets.decode(self._group(f).attrs.get("labelsets"))

    def _load_column(self, column: str, missing: str | None) -> np.ndarray:
        with self._engine._read() as f:
            table, keys, mask = self._view(f)
            if column not in table.columns:
                n = sum(table.count(k) for k in keys)
                if n and missing:
                    raise DatasetNotFoundError(missing, name=self._name)
                spec = {POSITION.name: POSITION, ROTATION.name: ROTATION}.get(column)
                shape = spec.shape if spec else ()
                return (
                    np.empty((0, *shape))
                    if not n
                    else np.full((n, *shape), np.nan)[
                        mask if mask is not None else slice(None)
                    ]
                )
            data = table.read(keys, column)
        return data if mask is None else data[mask]

    def __len__(self) -> int:
        """Cells (entities included) under the chunk filter and label filter."""
        with self._engine._read() as f:
            table, keys, mask = self._view(f)
            return int(mask.sum()) if mask is not None else sum(map(table.count, keys))

    def load_ids(self) -> np.ndarray:
        """Global ids of the cells in view (chunks by id, then insertion order)."""
        with self._engine._read() as f:
            table, keys, mask = self._view(f)
            ids = _global_ids(table, keys)
        return ids if mask is None else ids[mask]

    def load_positions(self) -> np.ndarray:
        return self._load_column(
            POSITION.name,
            f"Placement set '{self._name}' holds cells but no position data.",
        )

    def load_rotations(self) -> np.ndarray:
        return self._load_column(ROTATION.name, "No rotation data available.")

    def load_morphology_indices(self) -> tuple[np.ndarray, list[str]]:
        """Per-cell index into the returned morphology names (-1: none)."""
        idx = self._load_column(
            MORPHOLOGY.name,
            f"Placement set '{self._name}' holds cells but no morphology data.",
        )
        return idx, self.load_morphology_names()

    def load_morphology_names(self) -> list[str]:
        with self._engine._read() as f:
            g = self._group(f)
            return list(g["morphology_names"].asstr()[()])

    def has_column(self, column: str) -> bool:
        with self._engine._read() as f:
            return column in self._table(f).columns

    def load_additional(
        self, key: str | None = None
    ) -> np.ndarray | dict[str, np.ndarray]:
        """One additional column, or all of them as a dict (chunk and label filtered)."""
        if key is not None:
            if not self.has_column(_additional_column(key)):
                raise DatasetNotFoundError(
                    f"Placement set '{self._name}' has no additional data '{key}'.",
                    name=self._name,
                    key=key,
                )
            return self._load_column(_additional_column(key), None)
        with self._engine._read() as f:
            names = [c for c in self._table(f).columns if c.startswith("additional:")]
        return {c.split(":", 1)[1]: self._load_column(c, None) for c in names}

    def get_chunk_stats(self) -> dict[str, int]:
        """``{str(chunk id): cells}`` for every stored chunk, ignoring filters."""
        with self._engine._read() as f:
            table = self._table(f)
            return {str(k[0]): c for k, c in sorted(table.items())}

    def convert_to_local(self, ids: Sequence[int]) -> np.ndarray:
        """Map global ids to ids within the chunk-filtered view; ids outside it drop."""
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        with self._engine._read() as f:
            table = self._table(f)
            view = _global_ids(
                table, [(c,) for c in self._view_chunk_ids([k[0] for k in table.keys])]
            )
        local = np.searchsorted(view, ids)
        inside = (
            (local < len(view)) & (view[np.minimum(local, len(view) - 1)] == ids)
            if len(view)
            else np.zeros(len(ids), bool)
        )
        return local[inside].astype(np.int64)

    # ------------------------------------------------------------------- labels
    def set_label_filter(self, labels: Iterable[str] | None) -> None:
        """``None``: no filter; ``[]``: unlabelled cells only; else cells with any."""
        self._label_filter = None if labels is None else [str(x) for x in labels]

    def get_label_filter(self) -> list[str] | None:
        return self._label_filter

    def get_unique_labels(self) -> list[set[str]]:
        """The label sets of the chunk-filtered cells, in label-set id order."""
        with self._engine._read() as f:
            table, keys, _ = self._view(f, labels=False)
            present = _labels.present(self._read_labels(table, keys))
            sets = self._label_sets(f)
        return [set(sets.labels_of(int(i))) for i in present]

    def get_label_mask(self, labels: Iterable[str] | None = None) -> np.ndarray:
        """Mask over the chunk-filtered cells (ignoring the label filter)."""
        with self._engine._read() as f:
            table, keys, _ = self._view(f, labels=False)
            values = self._read_labels(table, keys)
            return self._label_sets(f).mask(values, labels)

    def get_labelled(self, labels: Iterable[str] | None = None) -> np.ndarray:
        """Global ids of the chunk-filtered cells that carry any of ``labels``."""
        with self._engine._read() as f:
            table, keys, _ = self._view(f, labels=False)
            mask = self._label_sets(f).mask(self._read_labels(table, keys), labels)
            return _view_to_global(np.flatnonzero(mask), *_view_map(table, keys))

    def label(self, labels: Iterable[str], cells: Any) -> None:
        """Add ``labels`` to ``cells`` (ids into the current filtered view, or a mask)."""
        self._relabel(list(labels), cells, add=True, mask=None)

    def remove_labels(self, labels: Iterable[str], cells: Any) -> None:
        self._relabel(list(labels), cells, add=False, mask=None)

    def label_by_mask(self, labels: Iterable[str], mask: Any) -> None:
        self._relabel(list(labels), None, add=True, mask=mask)

    def remove_labels_by_mask(self, labels: Iterable[str], mask: Any) -> None:
        self._relabel(list(labels), None, add=False, mask=mask)

    def _relabel(self, labels: list[str], cells: Any, add: bool, mask: Any) -> None:
        bad = [x for x in labels if not isinstance(x, str) or not x]
        if bad:
            raise LabellingError(
                f"Labels must be non-empty strings, got {bad!r} for placement set "
                f"'{self._name}'.",
                set=self._name,
            )
        with self._engine._write() as txn:
            f = txn.file
            table, keys, view_mask = self._view(f)
            ends, shifts = _view_map(table, keys)
            n_view = int(ends[-1]) if len(ends) else 0
            if view_mask is not None:
                n_view = int(np.count_nonzero(view_mask))
            rows = _resolve_cells(n_view, cells, mask, self._name)
            if not len(rows):
                return
            if view_mask is not None:
                rows = np.flatnonzero(view_mask)[rows]
            targets = _view_to_global(rows, ends, shifts)
            all_keys = sorted(table.keys)
            column = _labels.load_labels(table, all_keys)
            values = column.values
            sets = self._label_sets(f)
            known = len(sets.sets)
            new_values = sets.apply(values, targets, labels, add)
            _labels.write_labels(
                txn, self._path, table, all_keys, values, new_values, targets, column
            )
            if len(sets.sets) != known:
                txn.set_attr(self._path, "labelsets", sets.encode())

    # ------------------------------------------------------------------ appending
    def append_data(
        self,
        chunk: Any,
        positions: Any = None,
        rotations: Any = None,
        morphologies: tuple[Any, Sequence[str]] | None = None,
        additional: Mapping[str, Any] | None = None,
        count: int | None = None,
    ) -> None:
        """Append cells to a chunk in one atomic call.

        :param positions: (n, 3) floats, finite; ``[]`` creates the chunk empty.
        :param rotations: (n, 3) Euler angles (degrees).
        :param morphologies: ``(indices, names)``: per-cell index into ``names``.
        :param additional: per-cell columns by name, each with n rows.
        :param count: entities: n cells without positions, rotations or morphologies.
        """
        c = to_chunk(chunk)
        columns: dict[str, np.ndarray] = {}
        if count is not None and any(
            x is not None for x in (positions, rotations, morphologies)
        ):
            raise InvalidInputError(
                "`count` appends entities and cannot be combined with positions, "
                "rotations or morphologies.",
                set=self._name,
            )
        if positions is not None:
            columns[POSITION.name] = as_float_rows(positions, 3, "positions", finite=True)
        if rotations is not None:
            columns[ROTATION.name] = as_float_rows(rotations, 3, "rotations", finite=True)
        names: list[str] = []
        if morphologies is not None:
            indices, names = morphologies
            names = [str(n) for n in names]
            columns[MORPHOLOGY.name] = as_index_rows(indices, len(names), "morphologies")
        for key, value in (additional or {}).items():
            columns[_additional_column(parse_name(key, "additional key"))] = (
                _as_additional(value, key)
            )
        n = _common_length(columns, count, self._name)
        check_append(self._engine, self._path, columns, _fills(columns))
        records = self._engine._check_chunk_size(c.size)
        stream = ("P", self._name)
        records.append(Record((*stream, "count"), c.id, 0, None, n))
        if names:
            records.append(
                Record(
                    (*stream, "morphology_names"),
                    c.id,
                    0,
                    np.asarray(names, dtype=object),
                    len(names),
                )
            )
        for col, rows in columns.items():
            records.append(Record((*stream, col), c.id, 0, rows, n))
        self._engine._append(records)

    def append_entities(
        self, chunk: Any, count: int, additional: Mapping[str, Any] | None = None
    ) -> None:
        """Append ``count`` cells without positions (entities)."""
        self.append_data(chunk, count=count, additional=additional)

    def append_additional(self, name: str, chunk: Any, data: Any) -> None:
        """Set additional column ``name`` for every cell already in ``chunk``."""
        c = to_chunk(chunk)
        column = _additional_column(parse_name(name, "additional key"))
        rows = _as_additional(data, name)
        with self._engine._write() as txn:
            table = self._table(txn.file)
            n = table.count((c.id,))
            if len(rows) != n:
                raise ShapeError(
                    f"append_additional('{name}') got {len(rows)} rows for chunk "
                    f"{c.coords} of '{self._name}', which holds {n} cells.",
                    set=self._name,
                )
            table.overwrite(txn, self._path, (c.id,), column, rows)


def _fills(columns: Mapping[str, np.ndarray]) -> dict[str, float]:
    """The fill value of each column (rows an append did not give)."""
    fills = {p.name: p.fill for p in (POSITION, ROTATION, MORPHOLOGY, LABELS)}
    for col, rows in columns.items():
        if col not in fills:
            fills[col] = np.nan if rows.dtype.kind == "f" else 0
    return fills


def _stage_new_set(txn: Transaction, name: str) -> None:
    staged = txn.staging_path()
    g = txn.file.create_group(staged)
    create_index(g, 1)
    g.create_group("chunks")
    g.create_dataset(
        "morphology_names", (0,), dtype=h5py.string_dtype(), maxshape=(None,)
    )
    g.attrs["name"] = name
    g.attrs["labelsets"] = LabelSets().encode()
    txn.replace(staged, f"{GROUP}/{name}")


def _global_ids(table: ChunkTable, keys: Sequence[KeyT]) -> np.ndarray:
    """Global ids of the cells of ``keys`` (offsets over every stored chunk; keys
    that are not stored are skipped). One vectorised expansion of the chunks' id
    ranges, instead of one ``arange`` per chunk and a concatenation."""
    stored = sorted(table.keys)
    counts = np.asarray([table.count(k) for k in stored], dtype=np.int64)
    starts = np.cumsum(counts) - counts
    row = {k: i for i, k in enumerate(stored)}
    sel = np.asarray([row[k] for k in keys if k in row], dtype=np.int64)
    if not len(sel):
        return np.empty(0, np.int64)
    first, n = starts[sel], counts[sel]
    ends = np.cumsum(n)
    # Output row j of the p-th chunk is cell first[p] + (j - (ends[p] - n[p])).
    return np.arange(int(ends[-1]), dtype=np.int64) + np.repeat(first - (ends - n), n)


def _view_map(table: ChunkTable, keys: Sequence[KeyT]) -> tuple[np.ndarray, np.ndarray]:
    """Where the rows of the view over chunks ``keys`` (concatenated in the order
    given; keys that are not stored hold no cell) are in the global cell order, as
    ``(ends, shifts)``: view row ``r`` belongs to the view's chunk
    ``j = searchsorted(ends, r, "right")`` and is global cell ``r + shifts[j]``.

    Vectorised over the chunks (no Python call per chunk), and without expanding the
    id of every cell as :func:`_global_ids` does: see :func:`_view_to_global`."""
    stored = np.fromiter((k[0] for k in table.keys), np.int64, len(table.keys))
    counts = np.asarray(table.counts, dtype=np.int64).reshape(-1)
    order = np.argsort(stored, kind="stable")
    stored, counts = stored[order], counts[order]
    starts = np.cumsum(counts) - counts  # global id of each stored chunk's first cell
    view = np.fromiter((k[0] for k in keys), np.int64, len(keys))
    if not len(stored) or not len(view):
        empty = np.zeros(len(view), dtype=np.int64)
        return empty, empty
    pos = np.minimum(np.searchsorted(stored, view), len(stored) - 1)
    n = np.where(stored[pos] == view, counts[pos], 0)
    ends = np.cumsum(n)
    return ends, starts[pos] - (ends - n)


def _view_to_global(rows: np.ndarray, ends: np.ndarray, shifts: np.ndarray) -> np.ndarray:
    """Global ids of view rows ``rows`` (in range), given the view's
    :func:`_view_map`. When the view is every cell in global order (no chunk filter),
    row and id coincide and ``rows`` is returned as they are."""
    rows = np.asarray(rows, dtype=np.int64)
    if not shifts.any():
        return rows
    return rows + shifts[np.searchsorted(ends, rows, side="right")]


def _resolve_cells(n_view: int, cells: Any, mask: Any, name: str) -> np.ndarray:
    """The view rows (``[0, n_view)``) that ``cells`` (ids or a boolean mask) or
    ``mask`` select, in the order given; :class:`LabellingError` if they do not fit."""
    if mask is not None:
        m = np.asarray(mask)
        if m.dtype != bool or m.shape != (n_view,):
            raise LabellingError(
                f"Mask doesn't fit data: placement set '{name}' has {n_view} cells "
                f"in view, got a mask of shape {m.shape} and dtype {m.dtype}.",
                set=name,
            )
        return np.flatnonzero(m)
    c = np.asarray(cells)
    if c.dtype == bool:
        return _resolve_cells(n_view, None, c, name)
    c = c.reshape(-1)
    if not c.size:  # no cells, whatever the dtype of the empty array: nothing to cast
        return np.empty(0, dtype=np.int64)
    if c.dtype.kind not in "iu" or c.min() < 0 or c.max() >= n_view:
        bad = c[(c < 0) | (c >= n_view)] if c.dtype.kind in "iu" else c
        raise LabellingError(
            f"Cell ids {bad[:5].tolist()} are out of range for placement set '{name}' "
            f"with {n_view} cells in view.",
            set=name,
        )
    return c.astype(np.int64, copy=False)


def _as_additional(value: Any, key: str) -> np.ndarray:
    arr = np.array(value, copy=True)
    if arr.dtype.kind not in "biuf":
        raise InvalidInputError(
            f"Additional data '{key}' must be numeric, got dtype {arr.dtype}.", key=key
        )
    if arr.ndim == 0:
        raise ShapeError(
            f"Additional data '{key}' needs one row per cell, got a scalar.", key=key
        )
    return arr


def _common_length(columns: dict[str, np.ndarray], count: int | None, name: str) -> int:
    lengths = {k: len(v) for k, v in columns.items()}
    if count is not None:
        if int(count) != count or count < 0:
            raise InvalidInputError(
                f"`count` must be a whole number >= 0, got {count!r}."
            )
        lengths["count"] = int(count)
    if len(set(lengths.values())) > 1:
        raise ShapeError(
            f"Rows do not match across the columns appended to '{name}': {lengths}.",
            set=name,
            lengths=lengths,
        )
    return next(iter(lengths.values()), 0)


# --------------------------------------------------------------------- consolidation
def apply_placement(txn: Transaction, name: str, calls: list[Call]) -> None:
    """Applier: merge placement append calls into the set's chunk groups."""
    g = txn.file.get(f"{GROUP}/{name}")
    if g is None:
        merge.drop_calls(f"placement set '{name}' no longer exists", calls)
        return
    table = ChunkTable(g, _chunk_path)
    names_ds = g["morphology_names"]
    known = list(names_ds.asstr()[()])
    index = {n: i for i, n in enumerate(known)}
    for call in calls:
        n, key, data, local_names = 0, None, {}, None
        for rec in call.records:
            col = rec.stream[2]
            key = (rec.key0,)
            if col == "count":
                n = rec.nrows
            elif col == "morphology_names":
                local_names = list(rec.rows)
            else:
                data[col] = rec.rows
        if key is None:
            continue
        if MORPHOLOGY.name in data:
            lut = np.asarray(
                [index.setdefault(x, len(index)) for x in local_names or []],
                dtype=np.int64,
            )
            m = data[MORPHOLOGY.name]
            data[MORPHOLOGY.name] = np.where(
                m >= 0, lut[np.maximum(m, 0)] if len(lut) else -1, -1
            )
        try:
            if not n:
                # Additional keys given with no rows still exist (BSB's reference
                # engine lists them); the built-in columns are declared by rows.
                for col, rows in data.items():
                    if col.startswith(_additional_column("")):
                        table.declare(txn, col, rows, ADDITIONAL.fill)
            table.append(txn, key, n, data, _fills(data))
        except (ShapeError, DtypeError) as e:
            # Two processes introduced the same column with different shapes before
            # either was merged: the later call cannot be stored.
            merge.drop_calls(
                f"a conflicting column in placement set '{name}' ({e})", [call]
            )
    table.publish(txn, f"{GROUP}/{name}")
    if len(index) > len(known):
        new = sorted(index, key=index.get)[len(known) :]
        txn.resize(f"{GROUP}/{name}/morphology_names", len(index))
        txn.write(
            f"{GROUP}/{name}/morphology_names", len(known), np.asarray(new, dtype=object)
        )


merge.register_applier("P", apply_placement)
_ = json
