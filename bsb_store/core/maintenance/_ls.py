"""``ls``: an ``h5ls``-like listing of what a store holds, with sizes.

Only metadata is read (index counts, column registries, dataset shapes), never the
data itself, so listing a big store is cheap. Sizes of sets, chunks and blocks are the
bytes of data their index reaches (rows times the row size of each registered column,
label ids included); sizes of other datasets are the bytes HDF5 allocated for them.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Callable
from typing import Any

import h5py
import numpy as np

from ...exceptions import DatasetNotFoundError
from ..chunks import pack_id, unpack_id
from ..resources import connectivity as conn_res
from ..resources import labels as labels_res
from ..resources import placement as place_res
from ._common import (
    _open_root,
    _session,
    damage_text,
    is_damage,
    unsafe_global_heap,
)
from ._info import _describe_set, bsb_hdf5_refusal, chunk_label

#: The top-level groups of a store, in listing order, and what they hold.
_TOP = (
    (place_res.GROUP, "placement sets"),
    (conn_res.GROUP, "connectivity sets"),
    ("morphologies", "morphologies"),
    ("files", "files"),
    ("store", "engine metadata"),
)
_COORDS = re.compile(r"^\(?\s*(-?\d+)\s*,\s*(-?\d+)\s*,\s*(-?\d+)\s*\)?$")


def ls(
    root: str | os.PathLike,
    path: str = "",
    *,
    locking: str | None = None,
    recursive: bool = False,
) -> dict[str, Any]:
    """The listing of ``path`` in the store ``root`` (its top level by default).

    ``path`` is a top-level group (``placement``, ``connectivity``, ``morphologies``,
    ``files``, ``store``), a set (``placement/<name>``: its chunks with cell counts;
    ``connectivity/<name>``: its blocks with connection counts), a chunk of a
    placement set (``placement/<name>/<chunk>``, the chunk as an id or as coordinates
    ``x,y,z``: its datasets), or any other HDF5 path (its members, as ``h5ls``).
    With ``recursive``, the entries that are listings themselves are listed below
    them, down to the chunks and blocks of the sets (the datasets of generic groups).

    Returns ``{"root", "path", "kind", "entries": [...], "damaged": [...]}``; each
    entry has ``name``, ``path`` (to pass as ``path``), ``kind``, ``bytes`` and the
    counts of its kind, and ``entries`` when listed recursively.

    :raises DatasetNotFoundError: no ``path`` in the store.
    :raises StoreNotFoundError, NotAStoreError, FormatVersionError: as :func:`info`.
    """
    with bsb_hdf5_refusal(root), _session(root, locking, exclusive=False) as (p, _, _):
        hang = unsafe_global_heap(p)
        if hang is not None:  # HDF5 would never return: read nothing (as info)
            return {
                "root": p,
                "path": path or "/",
                "kind": "unreadable",
                "entries": [],
                "damaged": [f"damaged: {p}: {hang}"],
            }
        f = _open_root(p, "r")
        try:
            lister = _Lister(f)
            where = lister.resolve(path)
            kind, entries = lister.list(where, recursive)
        finally:
            f.close()
    return {
        "root": p,
        "path": where or "/",
        "kind": kind,
        "entries": entries,
        "damaged": lister.damage,
    }


class _Lister:
    def __init__(self, f: h5py.File):
        self.f = f
        self.damage: list[str] = []

    # ------------------------------------------------------------------ paths
    def resolve(self, path: str) -> str:
        """The HDF5 path (no leading slash) that ``path`` names."""
        parts = [p for p in path.strip().split("/") if p]
        if (
            len(parts) == 3
            and parts[0] == place_res.GROUP
            and parts[2] != "chunks"
            and parts[1] in self.f.get(place_res.GROUP, {})
        ):
            chunk = self._chunk_id(parts[2])
            if chunk is not None:
                parts = [*parts[:2], "chunks", str(chunk)]
        where = "/".join(parts)
        if where and where not in self.f:
            raise DatasetNotFoundError(
                f"No '{path}' in the store (`bsb-store ls ROOT` lists what it holds).",
                path=path,
            )
        return where

    @staticmethod
    def _chunk_id(text: str) -> int | None:
        m = _COORDS.match(text)
        if m:
            with contextlib.suppress(Exception):
                return pack_id(int(v) for v in m.groups())
        return int(text) if text.isdigit() else None

    def part(self, where: str, fn: Callable[[], Any], default: Any) -> Any:
        try:
            return fn()
        except Exception as e:
            if not is_damage(e):
                raise
            self.damage.append(damage_text(where, e))
            return default

    # --------------------------------------------------------------- listings
    def list(self, where: str, recursive: bool) -> tuple[str, list[dict[str, Any]]]:
        """(kind of ``where``, its entries)."""
        parts = where.split("/") if where else []
        if not parts:
            kind, entries = "store", self.top()
        elif len(parts) == 1 and parts[0] in (place_res.GROUP, conn_res.GROUP):
            kind, entries = f"{parts[0]} sets", self.sets(parts[0])
        elif len(parts) == 1 and parts[0] == "morphologies":
            kind, entries = "morphologies", self.morphologies()
        elif len(parts) == 1 and parts[0] == "files":
            kind, entries = "files", self.files()
        elif len(parts) == 2 and parts[0] == place_res.GROUP:
            kind, entries = "placement set", self.chunks(where)
        elif len(parts) == 2 and parts[0] == conn_res.GROUP:
            kind, entries = "connectivity set", self.blocks(where)
        else:
            obj = self.part(f"/{where}", lambda: self.f[where], None)
            if isinstance(obj, h5py.Dataset):
                return "dataset", [self.dataset(where, obj)]
            kind = "chunk" if len(parts) == 4 and parts[2] == "chunks" else "group"
            entries = self.members(where) if obj is not None else []
        if recursive:
            for e in entries:
                if e.get("listable"):
                    e["entries"] = self.list(e["path"], True)[1]
        return kind, entries

    def top(self) -> list[dict[str, Any]]:
        out = []
        for name, what in _TOP:
            if name not in self.f:
                continue
            e: dict[str, Any] = {"name": name, "path": name, "kind": what}
            if name in (place_res.GROUP, conn_res.GROUP):
                sets = self.sets(name)
                count = "cells" if name == place_res.GROUP else "connections"
                e.update(count=len(sets))
                e[count] = sum(s.get(count) or 0 for s in sets)
                e["bytes"] = sum(s.get("bytes") or 0 for s in sets)
            elif name == "morphologies":
                ms = self.morphologies()
                e.update(count=len(ms), points=sum(m.get("points", 0) for m in ms))
                e["bytes"] = sum(m.get("bytes") or 0 for m in ms)
            else:
                e["count"] = len(self.f[name])
                e["bytes"] = self.part(
                    f"/{name}", lambda n=name: _stored(self.f[n]), None
                )
            e["listable"] = True
            out.append(e)
        return out

    def sets(self, group: str) -> list[dict[str, Any]]:
        width = 1 if group == place_res.GROUP else 3
        out = []
        for name in sorted(self.f[group]):
            where = f"{group}/{name}"
            e: dict[str, Any] = {"name": name, "path": where, "listable": True}
            d = self.part(
                f"/{where}", lambda w=where: _describe_set(self.f[w], width), None
            )
            if d is None:
                e.update(kind="damaged" if self.damage else "group", bytes=None)
            elif width == 1:
                s, nbytes = d
                e.update(kind="placement set", cells=s["cells"], chunks=s["chunks"])
                e["bytes"] = nbytes
            else:
                s, nbytes = d
                e.update(
                    kind="connectivity set",
                    pre=s["pre"],
                    post=s["post"],
                    connections=s["connections"],
                    blocks=s["blocks"],
                    bytes=nbytes,
                )
            out.append(e)
        return out

    def _table(self, where: str) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
        g = self.f[where]
        columns = json.loads(g.attrs.get("columns", "{}"))
        return g["index/key"][()], g["index/count"][()], columns

    def chunks(self, where: str) -> list[dict[str, Any]]:
        """The chunks of a placement set: coordinates, id, cells, bytes."""
        table = self.part(f"/{where}/index", lambda: self._table(where), None)
        if table is None:
            return []
        keys, counts, columns = table
        row = _row_bytes(columns)
        lab = self.f[where].get(labels_res.GROUP)
        size, labelled = 0, {}
        if isinstance(lab, h5py.Group) and isinstance(lab.get("values"), h5py.Dataset):
            size = lab["values"].dtype.itemsize
            labelled = dict(
                zip(lab["keys"][()].tolist(), lab["counts"][()].tolist(), strict=True)
            )
        out = []
        for k, c in zip(keys[:, 0].tolist(), counts.tolist(), strict=True):
            out.append(
                {
                    "name": chunk_label(k),
                    "path": f"{where}/chunks/{k}",
                    "kind": "chunk",
                    "id": k,
                    "coords": list(unpack_id(k)),
                    "cells": c,
                    "bytes": c * row + min(c, labelled.get(k, 0)) * size,
                    "listable": False,
                }
            )
        return sorted(out, key=lambda e: e["coords"])

    def blocks(self, where: str) -> list[dict[str, Any]]:
        """The blocks of a connectivity set: local and remote chunk, connections."""
        table = self.part(f"/{where}/index", lambda: self._table(where), None)
        if table is None:
            return []
        keys, counts, columns = table
        row = _row_bytes(columns)
        out = []
        for (d, local, other), c in zip(keys.tolist(), counts.tolist(), strict=True):
            if d != 1 or c <= 0:
                continue
            out.append(
                {
                    "name": f"{chunk_label(local)} -> {chunk_label(other)}",
                    "path": f"{where}/out/{local}/{other}",
                    "kind": "block",
                    "pre_chunk": list(unpack_id(local)),
                    "post_chunk": list(unpack_id(other)),
                    "connections": c,
                    "bytes": 2 * c * row,  # stored twice: out/ and inc/
                    "listable": False,
                }
            )
        return sorted(out, key=lambda e: (e["pre_chunk"], e["post_chunk"]))

    def morphologies(self) -> list[dict[str, Any]]:
        out = []
        g = self.f["morphologies"]
        for name in sorted(g):
            where = f"morphologies/{name}"

            def one(w: str = where, n: str = name) -> dict[str, Any]:
                m = self.f[w]
                pts = m.get("points") if isinstance(m, h5py.Group) else None
                br = m.get("branches") if isinstance(m, h5py.Group) else None
                return {
                    "name": n,
                    "path": w,
                    "kind": "morphology",
                    "points": pts.shape[0] if isinstance(pts, h5py.Dataset) else 0,
                    "branches": br.shape[0] if isinstance(br, h5py.Dataset) else 0,
                    "bytes": _stored(m),
                    "listable": True,
                }

            e = self.part(f"/{where}", one, None)
            out.append(e or {"name": name, "path": where, "kind": "damaged"})
        return out

    def files(self) -> list[dict[str, Any]]:
        out = []
        g = self.f["files"]
        for name in sorted(g):
            where = f"files/{name}"

            def one(w: str = where, n: str = name) -> dict[str, Any]:
                ds = self.f[w]
                active = False
                with contextlib.suppress(ValueError, TypeError, AttributeError):
                    active = bool(
                        json.loads(ds.attrs.get("meta", "{}")).get("active_config")
                    )
                return {
                    "name": n,
                    "path": w,
                    "kind": "file",
                    "bytes": int(ds.size) if isinstance(ds, h5py.Dataset) else None,
                    "active_config": active,
                    "listable": False,
                }

            e = self.part(f"/{where}", one, None)
            out.append(e or {"name": name, "path": where, "kind": "damaged"})
        return out

    def members(self, where: str) -> list[dict[str, Any]]:
        """The members of a plain HDF5 group, as ``h5ls`` lists them."""
        out = []
        g = self.f[where]
        for name in sorted(g):
            path = f"{where}/{name}"
            obj = self.part(f"/{path}", lambda p=path: self.f[p], None)
            if isinstance(obj, h5py.Dataset):
                out.append(self.dataset(path, obj))
            elif isinstance(obj, h5py.Group):
                out.append(
                    {
                        "name": name,
                        "path": path,
                        "kind": "group",
                        "count": len(obj),
                        "bytes": self.part(f"/{path}", lambda o=obj: _stored(o), None),
                        "listable": True,
                    }
                )
            else:
                out.append({"name": name, "path": path, "kind": "damaged"})
        return out

    def dataset(self, path: str, ds: h5py.Dataset) -> dict[str, Any]:
        return {
            "name": path.rsplit("/", 1)[-1],
            "path": path,
            "kind": "dataset",
            "dtype": dtype_text(ds.dtype),
            "shape": list(ds.shape),
            "bytes": self.part(f"/{path}", lambda: int(ds.id.get_storage_size()), None),
            "listable": False,
        }


def dtype_text(dtype: np.dtype) -> str:
    """``float64``; a compound type as ``{position: float64[3], radius: float64}``."""
    if dtype.names:
        fields = []
        for name in dtype.names:
            sub = dtype.fields[name][0]
            shape = f"[{', '.join(map(str, sub.shape))}]" if sub.shape else ""
            fields.append(f"{name}: {dtype_text(sub.base)}{shape}")
        return "{" + ", ".join(fields) + "}"
    return str(dtype)


def _row_bytes(columns: dict[str, Any]) -> int:
    return sum(
        int(np.prod(spec["shape"], dtype=np.int64)) * np.dtype(spec["dtype"]).itemsize
        for spec in columns.values()
    )


def _stored(obj: h5py.Group | h5py.Dataset) -> int:
    """The bytes HDF5 allocated for the datasets in ``obj`` (metadata only)."""
    if isinstance(obj, h5py.Dataset):
        return int(obj.id.get_storage_size())
    total = [0]

    def add(_: str, o: Any) -> None:
        if isinstance(o, h5py.Dataset):
            total[0] += int(o.id.get_storage_size())

    obj.visititems(add)
    return total[0]
