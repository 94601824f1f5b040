"""The checks of the store's sets, morphologies and files (a mixin of the checker)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import h5py
import numpy as np

from ..resources import connectivity as conn_res
from ..resources import labels as labels_res
from ..resources import morphologies as morph_res
from ..resources import placement as place_res
from ..resources.labels import LabelSets
from ._common import _SAMPLES, ProgressFn, _fmt_bytes, _sample

#: What opening an HDF5 object of a damaged file raises (h5py maps most HDF5 errors to
#: KeyError for lookups, some to OSError/RuntimeError/ValueError).
_HDF5_ERRORS = (KeyError, OSError, RuntimeError, ValueError)


class _Broken:
    """The value :meth:`SetChecks.node` returns for a link that exists but cannot be
    opened (already reported); never an h5py object, and distinct from ``None``."""

    def __repr__(self) -> str:
        return "BROKEN"


#: See :class:`_Broken`.
BROKEN: Any = _Broken()


def _broken_prefix(parent: h5py.Group, name: str) -> str | None:
    """Where the path ``name`` below ``parent`` breaks: the absolute path of the first
    link on it that exists but cannot be opened (or whose group cannot be listed), or
    ``None`` if a link on it is simply absent (or a non-group is on the way)."""
    cur = parent
    base = parent.name.rstrip("/")
    parts = [x for x in name.split("/") if x]
    for i, part in enumerate(parts):
        here = f"{base}/{'/'.join(parts[: i + 1])}"
        try:
            link = cur.get(part, getlink=True)
        except _HDF5_ERRORS:
            return here
        if link is None:
            return None
        if i == len(parts) - 1:
            return here
        try:
            cur = cur[part]
        except _HDF5_ERRORS:
            return here
        if not isinstance(cur, h5py.Group):
            return None
    return None


class SetChecks:
    """Checks of chunked sets (index, columns, chunk groups), placement and
    connectivity specifics, morphologies and files. Needs ``error``, ``warn``,
    ``f``, ``progress`` and ``summary`` from the class it is mixed into."""

    f: h5py.File
    progress: ProgressFn
    summary: dict[str, Any]

    def error(self, code: str, where: str, msg: str, repairable: bool = False) -> None:
        raise NotImplementedError

    def warn(self, code: str, where: str, msg: str, repairable: bool = False) -> None:
        raise NotImplementedError

    def node(self, parent: h5py.Group, name: str) -> Any:
        """``parent[name]``; ``None`` if no such link exists.

        Unlike ``Group.get``, which answers ``None`` for a link that exists but cannot
        be opened (a torn or truncated file), this reports such a link as an
        ``unopenable`` error (once per broken path) and returns :data:`BROKEN`, so that
        callers neither call it missing nor trip over it.
        """
        try:
            return parent[name]
        except _HDF5_ERRORS as e:
            reason = e
        broken = _broken_prefix(parent, name)
        if broken is None:
            return None
        reported: set[str] = self.__dict__.setdefault("_unopenable", set())
        if broken not in reported:
            reported.add(broken)
            self.error(
                "unopenable",
                broken,
                f"'{broken}' is linked in the file but cannot be opened ({reason}): "
                "the file is damaged (torn or truncated) and what it holds cannot be "
                "read.",
            )
        return BROKEN

    def members(self, g: h5py.Group) -> list[tuple[str, Any]]:
        """``(name, object)`` of every member of ``g``, sorted by name; members that
        cannot be opened are reported (see :meth:`node`) and left out."""
        out = []
        for name in sorted(g.keys()):
            obj = self.node(g, name)
            if obj is not None and obj is not BROKEN:
                out.append((name, obj))
        return out

    # ---------------------------------------------------------------- chunked sets
    def table(self, g: h5py.Group, where: str, width: int):
        """(keys, counts, columns) of a chunked set's index, or None if unusable."""
        ix = self.node(g, "index")
        key, count = (
            (self.node(ix, "key"), self.node(ix, "count"))
            if isinstance(ix, h5py.Group)
            else (ix, None)
        )
        if key is BROKEN or count is BROKEN:
            return None
        if not isinstance(key, h5py.Dataset) or not isinstance(count, h5py.Dataset):
            self.error(
                "index-missing",
                f"{where}/index",
                f"The set has no index "
                f"('{where}/index/key' and '/count'): its chunks are unreachable.",
            )
            return None
        keys, counts = key[()], count[()]
        if keys.ndim != 2 or keys.shape[1] != width or counts.ndim != 1:
            self.error(
                "index-shape",
                f"{where}/index",
                f"index/key has shape "
                f"{keys.shape}, expected (K, {width}); index/count {counts.shape}.",
            )
            return None
        if len(keys) != len(counts):
            self.error(
                "index-length",
                f"{where}/index",
                f"index/key has {len(keys)} "
                f"rows but index/count has {len(counts)}: the set's length is "
                "undefined.",
            )
            return None
        if len(counts) and counts.min() < 0:
            self.error(
                "index-count",
                f"{where}/index/count",
                "Negative counts in the "
                f"index: {counts[counts < 0][:_SAMPLES].tolist()}.",
            )
            return None
        if len({tuple(k) for k in keys.tolist()}) != len(keys):
            self.error(
                "index-duplicate",
                f"{where}/index/key",
                "The index lists a chunk key more than once.",
            )
        columns = self.columns(g, where)
        if columns is None:
            return None
        return [tuple(int(v) for v in k) for k in keys], [int(c) for c in counts], columns

    def columns(self, g: h5py.Group, where: str) -> dict[str, Any] | None:
        raw = g.attrs.get("columns")
        try:
            columns = json.loads(raw)
            if not isinstance(columns, dict):
                raise TypeError(type(columns).__name__)
            for spec in columns.values():
                np.dtype(spec["dtype"])
                tuple(int(x) for x in spec["shape"])
        except Exception:
            self.error(
                "columns-registry",
                where,
                f"The columns registry of '{where}' "
                f"(attribute 'columns') is missing or corrupt: {raw!r:.80}. "
                "Expected a JSON object {name: {dtype, shape, fill}}.",
            )
            return None
        return columns

    def chunks(
        self,
        g: h5py.Group,
        where: str,
        keys,
        counts,
        columns,
        chunk_path: Callable[[tuple[int, ...]], str],
        roots: tuple[str, ...],
    ):
        """Check every chunk group of the index; return {key: group} of usable ones."""
        usable: dict[tuple[int, ...], h5py.Group] = {}
        tails: list[tuple[str, int, int]] = []
        unregistered: list[str] = []
        items = self.progress(zip(keys, counts), where, len(keys))
        for key, n in items:
            cp = chunk_path(key)
            grp = self.node(g, cp)
            if grp is BROKEN:
                continue
            if not isinstance(grp, h5py.Group):
                self.error(
                    "missing-chunk-group",
                    f"{where}/{cp}",
                    f"Index key {list(key)} "
                    f"(count {n}) has no chunk group '{where}/{cp}': its {n} rows "
                    "are lost.",
                )
                continue
            ok = all(
                [
                    self.column(grp, f"{where}/{cp}", c, s, n, tails)
                    for c, s in columns.items()
                ]
            )
            if ok:
                usable[key] = grp
            unregistered += [
                f"{where}/{cp}/{name}"
                for name, obj in self.members(grp)
                if name not in columns and isinstance(obj, h5py.Dataset)
            ]
        self._garbage(
            g,
            where,
            tails,
            unregistered,
            self._orphans(g, where, {chunk_path(k) for k in keys}, roots),
        )
        return usable

    def column(
        self,
        grp: h5py.Group,
        where: str,
        col: str,
        spec: dict[str, Any],
        n: int,
        tails: list[tuple[str, int, int]],
    ) -> bool:
        ds = self.node(grp, col)
        if ds is BROKEN:
            return False
        if ds is None:
            if n:
                self.error(
                    "missing-dataset",
                    f"{where}/{col}",
                    f"Column '{col}' has no "
                    f"dataset in '{where}', whose index count is {n}: {n} rows "
                    "are lost.",
                )
            return not n
        dtype, shape = np.dtype(spec["dtype"]), tuple(int(x) for x in spec["shape"])
        if (
            not isinstance(ds, h5py.Dataset)
            or ds.ndim != 1 + len(shape)
            or ds.shape[1:] != shape
            or ds.dtype != dtype
        ):
            got = (
                (ds.dtype, ds.shape[1:]) if isinstance(ds, h5py.Dataset) else ("a group",)
            )
            self.error(
                "column-mismatch",
                f"{where}/{col}",
                f"'{where}/{col}' holds "
                f"{got}, but the columns registry says {dtype} rows of shape "
                f"{shape}.",
            )
            return False
        if ds.shape[0] < n:
            self.error(
                "short-dataset",
                f"{where}/{col}",
                f"'{where}/{col}' has "
                f"{ds.shape[0]} rows but the index count is {n}: "
                f"{n - ds.shape[0]} rows are lost.",
            )
            return False
        if ds.shape[0] > n:
            row = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
            tails.append((f"{where}/{col}", ds.shape[0] - n, (ds.shape[0] - n) * row))
        return True

    def _orphans(
        self, g: h5py.Group, where: str, expected: set[str], roots: tuple[str, ...]
    ) -> list[str]:
        """Chunk groups under the chunk tree that no index key reaches."""
        prefixes = {
            p.rsplit("/", i)[0] for p in expected for i in range(p.count("/") + 1)
        }
        orphans: list[str] = []
        stack = [r for r in roots if isinstance(self.node(g, r), h5py.Group)]
        while stack:
            p = stack.pop()
            group = self.node(g, p)
            if not isinstance(group, h5py.Group):
                continue
            for name, obj in self.members(group):
                child = f"{p}/{name}"
                if child in expected:
                    continue
                if child in prefixes and isinstance(obj, h5py.Group):
                    stack.append(child)
                else:
                    orphans.append(f"{where}/{child}")
        return sorted(orphans)

    def _garbage(self, g: h5py.Group, where: str, tails, unregistered, orphans) -> None:
        if tails:
            rows = sum(t[1] for t in tails)
            size = _fmt_bytes(sum(t[2] for t in tails))
            self.warn(
                "garbage-tail",
                where,
                f"{len(tails)} datasets hold {rows} rows past "
                f"their index counts ({size} reclaimable by `bsb-store compact`), "
                "left by writes that never published: "
                f"{_sample([t[0] for t in tails])}.",
            )
        if unregistered:
            self.warn(
                "unregistered-dataset",
                where,
                f"{len(unregistered)} datasets are "
                "not in the set's columns registry (leftovers of a transaction "
                "that never published; readers ignore them, `bsb-store compact` "
                f"drops them): {_sample(unregistered)}.",
            )
        if orphans:
            self.warn(
                "orphan-chunk",
                where,
                f"{len(orphans)} chunk groups are not in the "
                "index (leftovers of a transaction that never published; readers "
                f"ignore them, `bsb-store compact` drops them): {_sample(orphans)}.",
            )

    # --------------------------------------------------------------- placement
    def placement(self, name: str) -> None:
        where = f"{place_res.GROUP}/{name}"
        g = self.node(self.f, where)
        if g is BROKEN or g is None:
            return
        if not isinstance(g, h5py.Group):
            self.error("set-damaged", where, f"'{where}' is not a group.")
            return
        t = self.table(g, where, 1)
        if t is None:
            return
        keys, counts, columns = t
        usable = self.chunks(
            g, where, keys, counts, columns, place_res._chunk_path, ("chunks",)
        )
        self.summary["placement"][name] = {"cells": sum(counts), "chunks": len(keys)}
        names = self.node(g, "morphology_names")
        if names is BROKEN:
            pass
        elif not isinstance(names, h5py.Dataset):
            self.error(
                "missing-dataset",
                f"{where}/morphology_names",
                "The set has no 'morphology_names' dataset.",
            )
        elif place_res.MORPHOLOGY.name in columns:
            self._morphology_indices(where, usable, dict(zip(keys, counts)), len(names))
        self._labels(g, where, usable, dict(zip(keys, counts)), columns)

    def _morphology_indices(self, where: str, usable, counts, m: int) -> None:
        bad: list[str] = []
        for key, grp in usable.items():
            n = counts[key]
            ds = self.node(grp, place_res.MORPHOLOGY.name)
            if n and isinstance(ds, h5py.Dataset):
                v = ds[:n]
                out = v[(v < -1) | (v >= m)]
                if len(out):
                    bad.append(
                        f"chunk {key[0]}: {len(out)} cells, e.g. "
                        f"{np.unique(out)[:3].tolist()}"
                    )
        if bad:
            self.error(
                "morphology-index",
                where,
                f"Morphology indices outside [-1, {m}) "
                f"(the set has {m} morphology names): {_sample(bad)}.",
            )

    def _labels(self, g: h5py.Group, where: str, usable, counts, columns) -> None:
        try:
            sets = LabelSets.decode(g.attrs.get("labelsets"))
        except (ValueError, TypeError, AttributeError):
            self.error(
                "labelsets",
                where,
                f"The label-set table of '{where}' (attribute "
                "'labelsets') is not valid JSON {id: [labels]}.",
            )
            return
        ids = np.asarray(sorted(sets.sets), dtype=np.int64)
        bad = self._label_column(g, where, counts, ids)
        legacy = place_res.LABELS.name in columns  # the per-chunk column of before
        for key, grp in usable.items() if legacy else ():
            ds = self.node(grp, place_res.LABELS.name)
            if counts[key] and isinstance(ds, h5py.Dataset):
                v = ds[: counts[key]]
                unknown = np.setdiff1d(v, ids)
                if len(unknown):
                    bad.append(f"chunk {key[0]}: ids {unknown[:3].tolist()}")
        if bad:
            self.error(
                "label-set-id",
                where,
                f"Cells carry label-set ids missing from "
                f"the set's table (known ids {ids.tolist()}): {_sample(bad)}.",
            )

    def _label_column(
        self, g: h5py.Group, where: str, counts: dict, ids: np.ndarray
    ) -> list[str]:
        """Check the flat label column (``resources/labels.py``): its snapshot of
        chunks must agree with the index (a chunk it lists that the index lacks would
        hand its labels to cells appended to that chunk later); return the chunks whose
        cells carry ids missing from the label-set table."""
        lg = self.node(g, labels_res.GROUP)
        if lg is None or lg is BROKEN:
            return []
        at = f"{where}/{labels_res.GROUP}"
        parts = (
            [self.node(lg, n) for n in ("keys", "counts", "values")]
            if isinstance(lg, h5py.Group)
            else [None] * 3
        )
        if any(p is BROKEN for p in parts):
            return []
        if not all(
            isinstance(p, h5py.Dataset) and p.ndim == 1 and p.dtype.kind in "iu"
            for p in parts
        ):
            self.error(
                "label-column",
                at,
                f"'{at}' must be a group of three 1-D integer datasets 'keys', "
                "'counts' and 'values': the set's labels cannot be read.",
            )
            return []
        keys, held = parts[0][()], parts[1][()]
        total = parts[2].shape[0]
        index = {k[0]: n for k, n in counts.items()}
        problem = None
        if len(keys) != len(held) or (len(held) and held.min() < 0):
            problem = f"{len(keys)} keys but {len(held)} counts (or negative counts)"
        elif int(held.sum()) != total:
            problem = f"counts add up to {int(held.sum())} but 'values' has {total} rows"
        elif len(keys) > 1 and np.any(np.diff(keys) <= 0):
            problem = "keys are not strictly ascending"
        else:
            over = [
                f"chunk {k}: {n} rows, index count {index.get(k)}"
                for k, n in zip(keys.tolist(), held.tolist())
                if n > index.get(k, 0)
            ]
            if over:
                problem = f"it holds rows of cells the index lacks: {_sample(over)}"
        if problem:
            self.error(
                "label-column",
                at,
                f"The label column of '{where}' disagrees with itself or with the "
                f"set's index: {problem}.",
            )
            return []
        values = parts[2][()]
        rows = np.flatnonzero(~np.isin(values, ids))
        chunk = np.searchsorted(np.cumsum(held), rows, side="right")
        return [
            f"chunk {int(keys[c])}: ids {np.unique(values[rows[chunk == c]])[:3].tolist()}"
            for c in np.unique(chunk).tolist()
        ]

    # ------------------------------------------------------------ connectivity
    def connectivity(self, tag: str) -> None:
        where = f"{conn_res.GROUP}/{tag}"
        g = self.node(self.f, where)
        if g is BROKEN or g is None:
            return
        if not isinstance(g, h5py.Group):
            self.error("set-damaged", where, f"'{where}' is not a group.")
            return
        missing = [a for a in ("pre", "post") if a not in g.attrs]
        if missing:
            self.error("missing-attribute", where, f"The set has no {missing} attribute.")
        t = self.table(g, where, 3)
        if t is None:
            return
        keys, counts, columns = t
        bad = [k for k in keys if k[0] not in (0, 1)]
        if bad:
            self.error(
                "index-direction",
                f"{where}/index/key",
                "Index keys with a "
                f"direction other than 0 (inc) or 1 (out): {_sample(bad)}.",
            )
        good = [(k, n) for k, n in zip(keys, counts) if k[0] in (0, 1)]
        self.chunks(
            g,
            where,
            [k for k, _ in good],
            [n for _, n in good],
            columns,
            conn_res._chunk_path,
            conn_res.DIRECTIONS,
        )
        self._mirror(where, good)
        out = [n for k, n in good if k[0] == 1 and n]
        self.summary["connectivity"][tag] = {"connections": sum(out), "blocks": len(out)}

    def _mirror(self, where: str, good: list[tuple[tuple[int, ...], int]]) -> None:
        out = {(k[1], k[2]): n for k, n in good if k[0] == 1 and n}
        inc = {(k[2], k[1]): n for k, n in good if k[0] == 0 and n}
        bad = [
            f"{s}->{d}: out {out.get((s, d), 0)}, inc {inc.get((s, d), 0)}"
            for s, d in sorted(set(out) | set(inc))
            if out.get((s, d)) != inc.get((s, d))
        ]
        if bad:
            self.error(
                "mirror-mismatch",
                where,
                "The 'inc' and 'out' blocks do not "
                "mirror each other (connections per presynaptic->postsynaptic "
                f"chunk pair): {_sample(bad)}.",
            )
        if sum(out.values()) != sum(inc.values()):
            self.error(
                "length-mismatch",
                where,
                f"len() counts {sum(out.values())} "
                f"connections in 'out' but 'inc' holds {sum(inc.values())}.",
            )

    # ------------------------------------------------------- morphologies, files
    def morphologies(self) -> None:
        g = self.f["morphologies"]
        for name, obj in self.members(g):
            where = f"morphologies/{name}"
            # Per-point rows in one compound dataset, or (the layout of before) in
            # three datasets: see resources/morphologies.py.
            points = self.node(obj, "points") if isinstance(obj, h5py.Group) else None
            compound = isinstance(points, h5py.Dataset) and points.dtype.names
            need: tuple[str, ...] = ("points", "branches")
            if not compound:
                need = ("points", "radii", "labels", "branches")
            parts = (
                [self.node(obj, d) for d in need] if isinstance(obj, h5py.Group) else []
            )
            if any(x is BROKEN for x in parts):
                continue
            fields = morph_res.POINT_ROW.names
            if (
                not isinstance(obj, h5py.Group)
                or any(not isinstance(x, h5py.Dataset) for x in parts)
                or (compound and not set(fields) <= set(points.dtype.names))
            ):
                what = f"the datasets {list(need)}"
                if compound:
                    what += f" (or of the fields {list(fields)} of 'points')"
                self.error(
                    "morphology-damaged",
                    where,
                    f"Morphology '{name}' lacks one of {what}.",
                )
                continue
            n = obj["points"].shape[0]
            br = obj["branches"]
            lens = {} if compound else {d: obj[d].shape[0] for d in ("radii", "labels")}
            ends_ok = br.ndim == 2 and (not br.shape[0] or int(br[:, 0].max()) <= n)
            if any(v != n for v in lens.values()) or not ends_ok:
                self.error(
                    "morphology-damaged",
                    where,
                    f"Morphology '{name}' has {n} "
                    f"points but {lens} per-point rows, or branches past the "
                    "points.",
                )
        self.summary["morphologies"] = len(g)

    def files(self) -> None:
        g = self.f["files"]
        for name, obj in self.members(g):
            if (
                not isinstance(obj, h5py.Dataset)
                or obj.ndim != 1
                or obj.dtype != np.uint8
            ):
                self.error(
                    "file-damaged",
                    f"files/{name}",
                    f"File '{name}' must be a 1-D uint8 dataset.",
                )
        self.summary["files"] = len(g)
