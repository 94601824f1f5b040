"""``info``: a summary of what a store holds."""

from __future__ import annotations

import contextlib
import json
import os
from typing import Any

import h5py
import numpy as np

from .. import layout
from ..resources import connectivity as conn_res
from ..resources import labels as labels_res
from ..resources import placement as place_res
from ..writes.txn import JOURNAL
from ..writes.undo import has_undo
from ._common import _int_attr, _open_root, _session, _shards


def info(root: str | os.PathLike, *, locking: str | None = None) -> dict[str, Any]:
    """A summary of a store: sets, morphologies, files, chunk size, sizes, provenance,
    and the shard data not merged yet. Read-only.

    :raises StoreNotFoundError, NotAStoreError, FormatVersionError: as :func:`check`.
    """
    with _session(root, locking, exclusive=False) as (path, st, _):
        f = _open_root(path, "r")
        try:
            out = _describe(f, path)
            shards = _shards(f, path, st)
        finally:
            f.close()
    out["pending"] = {
        "shards": len(shards),
        "live_writers": sum(s.alive for s in shards),
        "dead_writers": sum(not s.alive for s in shards),
        "calls": sum(s.pending_calls for s in shards),
        "records": sum(s.pending_records for s in shards),
    }
    return out


def _describe(f: h5py.File, path: str) -> dict[str, Any]:
    try:
        prov = json.loads(f["store"].attrs.get("provenance", "{}"))
    except ValueError:
        prov = {}
    size = f["store/chunk_size"][()] if "store/chunk_size" in f else None
    stored = {"bytes": 0}
    out: dict[str, Any] = {
        "root": path,
        "format": {"name": layout.FORMAT_NAME, "version": _int_attr(f, "format_version")},
        "provenance": {
            "storage_id": _str_attr(f, "storage_id"),
            "state_id": int(f["store/state"][0]) if "store/state" in f else None,
            "created_at": _str_attr(f, "created_at"),
            "written_by": _str_attr(f, "written_by"),
            "created_with": _str_attr(f, "bsb_store_version"),
            "engine_version": prov.get("engine_version"),
            "mpi_size": prov.get("mpi_size"),
        },
        "chunk_size": None if size is None or np.isnan(size).any() else size.tolist(),
        "placement": _describe_sets(f, place_res.GROUP, 1, stored),
        "connectivity": _describe_sets(f, conn_res.GROUP, 3, stored),
        "morphologies": _describe_morphologies(f, stored),
        "files": _describe_files(f, stored),
        "interrupted_transaction": JOURNAL in f,
        # A dead writer's session: the summary describes the root as rolled back.
        "interrupted_session": has_undo(path),
    }
    out["sizes"] = {"file_bytes": os.path.getsize(path), "data_bytes": stored["bytes"]}
    return out


def _str_attr(f: h5py.File, name: str) -> str | None:
    v = f.attrs.get(name)
    return None if v is None else str(v.decode() if isinstance(v, bytes) else v)


def _describe_sets(f: h5py.File, group: str, width: int, stored: dict[str, int]):
    out: dict[str, Any] = {}
    for name, g in sorted(f[group].items()) if group in f else []:
        if not isinstance(g, h5py.Group):
            out[name] = {"damaged": True}
            continue
        try:
            keys, counts = g["index/key"][()], g["index/count"][()]
            columns = json.loads(g.attrs.get("columns", "{}"))
        except (KeyError, ValueError):
            out[name] = {"damaged": True}
            continue
        for spec in columns.values():
            row = (
                int(np.prod(spec["shape"], dtype=np.int64))
                * np.dtype(spec["dtype"]).itemsize
            )
            stored["bytes"] += row * int(counts.sum())
        if width == 1:
            names = g.get("morphology_names")
            # Label-set ids live in a flat column beside the chunk table.
            ids = g.get(f"{labels_res.GROUP}/values")
            if isinstance(ids, h5py.Dataset):
                stored["bytes"] += ids.size * ids.dtype.itemsize
            out[name] = {
                "cells": int(counts.sum()),
                "chunks": len(keys),
                "columns": [*columns, *(["labels"] if ids is not None else [])],
                "morphology_names": 0 if names is None else len(names),
            }
        else:
            out_dir = (keys[:, 0] == 1) & (counts > 0)
            out[name] = {
                "pre": _str_attr(g, "pre"),
                "post": _str_attr(g, "post"),
                "connections": int(counts[out_dir].sum()),
                "blocks": int(out_dir.sum()),
                "local_chunks": len(np.unique(keys[out_dir, 1])),
            }
    return out


def _describe_morphologies(f: h5py.File, stored: dict[str, int]) -> dict[str, Any]:
    names = sorted(f["morphologies"]) if "morphologies" in f else []
    points = 0
    for n in names:
        g = f["morphologies"][n]
        if isinstance(g, h5py.Group) and "points" in g:
            points += g["points"].shape[0]
            g.visititems(lambda _, o: _add_bytes(o, stored))
    return {"count": len(names), "points": points, "names": names}


def _describe_files(f: h5py.File, stored: dict[str, int]) -> dict[str, Any]:
    g = f.get("files", {})
    size, active = 0, None
    for name, ds in g.items():
        if isinstance(ds, h5py.Dataset):
            size += ds.size
            with contextlib.suppress(ValueError, TypeError):
                if json.loads(ds.attrs.get("meta", "{}")).get("active_config"):
                    active = name
    stored["bytes"] += size
    return {"count": len(g), "bytes": size, "active_config": active}


def _add_bytes(obj: Any, stored: dict[str, int]) -> None:
    if isinstance(obj, h5py.Dataset) and obj.dtype.kind in "biufcV":  # V: compound
        stored["bytes"] += obj.size * obj.dtype.itemsize
