"""``info``: a summary of what a store holds."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable
from typing import Any

import h5py
import numpy as np

from .. import layout
from ..resources import connectivity as conn_res
from ..resources import labels as labels_res
from ..resources import placement as place_res
from ..writes import consolidate as merge
from ..writes.txn import JOURNAL
from ..writes.undo import has_undo
from ._common import (
    _int_attr,
    _open_root,
    _session,
    _shards,
    damage_text,
    is_damage,
    unsafe_global_heap,
)


def info(root: str | os.PathLike, *, locking: str | None = None) -> dict[str, Any]:
    """A summary of a store: sets, morphologies, files, chunk size, sizes, provenance,
    and the shard data not merged yet. Read-only.

    Parts that cannot be read (a damaged file) are listed under ``"damaged"`` as
    ``damaged: <object>: <error>`` and left out (or None) in the summary.

    :raises StoreNotFoundError, NotAStoreError, FormatVersionError: as :func:`check`.
    """
    with _session(root, locking, exclusive=False) as (path, st, _):
        damage: list[str] = []
        hang = unsafe_global_heap(path)
        if hang is not None:  # HDF5 would never return: read nothing
            out = _describe(None, path, damage)
            damage.append(f"damaged: {path}: {hang}")
            shards, missing = [], []
        else:
            f = _open_root(path, "r")
            try:
                out = _describe(f, path, damage)
                shards = _part(damage, "/store/shards", lambda: _shards(f, path, st), [])
                missing = _part(
                    damage,
                    f"/{merge.REGISTERED}",
                    lambda: merge.missing_shards(f, layout.shard_dir(path)),
                    [],
                )
            finally:
                f.close()
    out["pending"] = {
        "shards": len(shards),
        "live_writers": sum(s.alive for s in shards),
        "dead_writers": sum(not s.alive for s in shards),
        "calls": sum(s.pending_calls for s in shards),
        "records": sum(s.pending_records for s in shards),
        # Writers registered in the root whose shards are not next to it.
        "missing_writers": len(missing),
        "missing": merge.missing_text(path, missing) + "." if missing else None,
    }
    out["damaged"] = damage
    return out


def _part(damage: list[str], where: str, fn: Callable[[], Any], default: Any) -> Any:
    """``fn()``, or ``default`` when reading the file fails there (noted in
    ``damage``)."""
    try:
        return fn()
    except Exception as e:
        if not is_damage(e):
            raise
        damage.append(damage_text(where, e))
        return default


def _describe(f: h5py.File | None, path: str, damage: list[str]) -> dict[str, Any]:
    def part(where: str, fn: Callable[[], Any], default: Any) -> Any:
        return default if f is None else _part(damage, where, fn, default)

    prov = part("/store", lambda: _provenance(f), {})
    size = part(
        "/store/chunk_size",
        lambda: f["store/chunk_size"][()] if "store/chunk_size" in f else None,
        None,
    )
    stored = {"bytes": 0}
    out: dict[str, Any] = {
        "root": path,
        "format": {
            "name": layout.FORMAT_NAME,
            "version": part("/", lambda: _int_attr(f, "format_version"), None),
        },
        "provenance": {
            "storage_id": part("/", lambda: _str_attr(f, "storage_id"), None),
            "state_id": part(
                "/store/state",
                lambda: int(f["store/state"][0]) if "store/state" in f else None,
                None,
            ),
            "created_at": part("/", lambda: _str_attr(f, "created_at"), None),
            "written_by": part("/", lambda: _str_attr(f, "written_by"), None),
            "created_with": part("/", lambda: _str_attr(f, "bsb_store_version"), None),
            "engine_version": prov.get("engine_version"),
            "mpi_size": prov.get("mpi_size"),
        },
        "chunk_size": part(
            "/store/chunk_size",
            lambda: None if size is None or np.isnan(size).any() else size.tolist(),
            None,
        ),
        "placement": part(
            f"/{place_res.GROUP}",
            lambda: _describe_sets(f, place_res.GROUP, 1, stored, damage),
            {},
        ),
        "connectivity": part(
            f"/{conn_res.GROUP}",
            lambda: _describe_sets(f, conn_res.GROUP, 3, stored, damage),
            {},
        ),
        "morphologies": part(
            "/morphologies",
            lambda: _describe_morphologies(f, stored),
            {"count": 0, "points": 0, "names": []},
        ),
        "files": part(
            "/files",
            lambda: _describe_files(f, stored),
            {"count": 0, "bytes": 0, "active_config": None},
        ),
        "interrupted_transaction": part(f"/{JOURNAL}", lambda: JOURNAL in f, False),
        # A dead writer's session: the summary describes the root as rolled back.
        "interrupted_session": has_undo(path),
    }
    out["sizes"] = {"file_bytes": os.path.getsize(path), "data_bytes": stored["bytes"]}
    return out


def _provenance(f: h5py.File) -> dict[str, Any]:
    try:
        prov = json.loads(f["store"].attrs.get("provenance", "{}"))
    except ValueError:
        return {}
    return prov if isinstance(prov, dict) else {}


def _str_attr(f: h5py.File, name: str) -> str | None:
    v = f.attrs.get(name)
    return None if v is None else str(v.decode() if isinstance(v, bytes) else v)


def _describe_sets(
    f: h5py.File, group: str, width: int, stored: dict[str, int], damage: list[str]
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in sorted(f[group]) if group in f else []:
        where = f"/{group}/{name}"
        s = _part(damage, where, lambda n=name: _describe_set(f[group][n], width), None)
        if s is None:
            out[name] = {"damaged": True}
            continue
        out[name], nbytes = s
        stored["bytes"] += nbytes
    return out


def _describe_set(g: Any, width: int) -> tuple[dict[str, Any], int] | None:
    """What one set holds and the bytes of its data; None if it is not a set."""
    if not isinstance(g, h5py.Group):
        return None
    try:
        keys, counts = g["index/key"][()], g["index/count"][()]
        columns = json.loads(g.attrs.get("columns", "{}"))
    except (KeyError, ValueError):
        return None
    nbytes = 0
    for spec in columns.values():
        row = (
            int(np.prod(spec["shape"], dtype=np.int64)) * np.dtype(spec["dtype"]).itemsize
        )
        nbytes += row * int(counts.sum())
    if width == 1:
        names = g.get("morphology_names")
        # Label-set ids live in a flat column beside the chunk table.
        ids = g.get(f"{labels_res.GROUP}/values")
        if isinstance(ids, h5py.Dataset):
            nbytes += ids.size * ids.dtype.itemsize
        return {
            "cells": int(counts.sum()),
            "chunks": len(keys),
            "columns": [*columns, *(["labels"] if ids is not None else [])],
            "morphology_names": 0 if names is None else len(names),
        }, nbytes
    out_dir = (keys[:, 0] == 1) & (counts > 0)
    return {
        "pre": _str_attr(g, "pre"),
        "post": _str_attr(g, "post"),
        "connections": int(counts[out_dir].sum()),
        "blocks": int(out_dir.sum()),
        "local_chunks": len(np.unique(keys[out_dir, 1])),
    }, nbytes


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
