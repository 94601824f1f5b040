"""``info``: a summary of what a store holds."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable
from typing import Any

import h5py
import numpy as np

from ...exceptions import NotAStoreError
from .. import layout
from ..chunks import unpack_id
from ..resources import connectivity as conn_res
from ..resources import labels as labels_res
from ..resources import placement as place_res
from ..writes import consolidate as merge
from ..writes.txn import JOURNAL
from ..writes.undo import has_undo
from ._common import (
    ProgressFn,
    _abspath,
    _int_attr,
    _open_root,
    _quiet,
    _session,
    _shards,
    damage_text,
    is_damage,
    unsafe_global_heap,
)

#: Rows read at a time for the extent and the label counts (bounded memory).
_BLOCK_ROWS = 1 << 18


def info(
    root: str | os.PathLike,
    *,
    locking: str | None = None,
    progress: ProgressFn | None = None,
) -> dict[str, Any]:
    """A summary of a store: sets, morphologies, files, chunk size, sizes, provenance,
    and the shard data not merged yet. Read-only.

    Per placement set it also gives the label counts, the column types, the chunk
    coordinates' range and the spatial extent (min/max of the positions, read chunk by
    chunk, ``_BLOCK_ROWS`` rows at a time); ``progress`` reports those reads.

    Parts that cannot be read (a damaged file) are listed under ``"damaged"`` as
    ``damaged: <object>: <error>`` and left out (or None) in the summary.

    :raises StoreNotFoundError, NotAStoreError, FormatVersionError: as :func:`check`;
        :class:`NotAStoreError` says so when the file is a bsb-hdf5 network.
    """
    with bsb_hdf5_refusal(root):
        return _info(root, locking, progress or _quiet)


@contextlib.contextmanager
def bsb_hdf5_refusal(root: str | os.PathLike) -> Any:
    """Turn the :class:`NotAStoreError` of a bsb-hdf5 network into one that says what
    the file is."""
    try:
        yield
    except NotAStoreError as e:
        path = _abspath(root)
        version = bsb_hdf5_version(path)
        if version is None:
            raise
        raise NotAStoreError(
            f"'{path}' is a bsb-hdf5 network ({version}), not a bsb-store root. "
            "bsb-store has no import command yet: open it with BSB's "
            "Storage('hdf5', path), or compile the network again with "
            "Storage('store', path).",
            path=path,
        ) from e


def bsb_hdf5_version(path: str) -> str | None:
    """``'bsb-hdf5 <version>'`` if ``path`` is a network written by bsb-hdf5 (its root
    attribute ``bsb_hdf5_version``, or its layout: ``/placement`` and
    ``/connectivity`` without the ``bsb_store_format`` attribute), else None."""
    try:
        with h5py.File(path, "r", locking=False) as f:
            if "bsb_store_format" in f.attrs:
                return None
            v = f.attrs.get("bsb_hdf5_version")
            if v is not None:
                return f"bsb-hdf5 {v.decode() if isinstance(v, bytes) else v}"
            if "bsb_version" in f.attrs or (
                isinstance(f.get("placement"), h5py.Group)
                and isinstance(f.get("connectivity"), h5py.Group)
                and ("chunk_size" in f.attrs or "morphology_meta" in f.attrs)
            ):
                return "bsb-hdf5, version unknown"
    except Exception:  # not HDF5, damaged: not a network either
        return None
    return None


def _info(root: str | os.PathLike, locking: str | None, progress: ProgressFn) -> dict:
    with _session(root, locking, exclusive=False) as (path, st, _):
        damage: list[str] = []
        hang = unsafe_global_heap(path)
        if hang is not None:  # HDF5 would never return: read nothing
            out = _describe(None, path, damage, progress)
            damage.append(f"damaged: {path}: {hang}")
            shards, missing = [], []
        else:
            f = _open_root(path, "r")
            try:
                out = _describe(f, path, damage, progress)
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


def _describe(
    f: h5py.File | None, path: str, damage: list[str], progress: ProgressFn
) -> dict[str, Any]:
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
            lambda: _describe_sets(f, place_res.GROUP, 1, stored, damage, progress),
            {},
        ),
        "connectivity": part(
            f"/{conn_res.GROUP}",
            lambda: _describe_sets(f, conn_res.GROUP, 3, stored, damage, progress),
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
    f: h5py.File,
    group: str,
    width: int,
    stored: dict[str, int],
    damage: list[str],
    progress: ProgressFn = _quiet,
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in sorted(f[group]) if group in f else []:
        where = f"/{group}/{name}"
        s = _part(
            damage,
            where,
            lambda n=name, w=where: _describe_set(f[group][n], width, progress, w),
            None,
        )
        if s is None:
            out[name] = {"damaged": True}
            continue
        out[name], nbytes = s
        stored["bytes"] += nbytes
    return out


def _describe_set(
    g: Any, width: int, progress: ProgressFn | None = None, where: str = ""
) -> tuple[dict[str, Any], int] | None:
    """What one set holds and the bytes of its data; None if it is not a set.

    With ``progress``, placement sets also get their labels and spatial extent (which
    read the label ids and the positions); without it (``ls``) only metadata is read."""
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
        out = {
            "cells": int(counts.sum()),
            "chunks": len(keys),
            "columns": [*columns, *(["labels"] if ids is not None else [])],
            "morphology_names": 0 if names is None else len(names),
            "column_types": _column_types(columns, ids),
            "chunk_range": _chunk_range(keys[:, 0]),
        }
        if progress is not None:
            out["morphologies_used"] = (
                [] if names is None else [_text(n) for n in names[()]]
            )
            out["labels"] = _label_counts(g, keys[:, 0], counts, columns, progress, where)
            out["extent"] = _extent(g, keys[:, 0], counts, columns, progress, where)
        return out, nbytes
    out_dir = (keys[:, 0] == 1) & (counts > 0)
    return {
        "pre": _str_attr(g, "pre"),
        "post": _str_attr(g, "post"),
        "connections": int(counts[out_dir].sum()),
        "blocks": int(out_dir.sum()),
        "local_chunks": len(np.unique(keys[out_dir, 1])),
        "column_types": _column_types(columns, None),
        "chunk_range": _chunk_range(keys[out_dir, 1]),
    }, nbytes


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _column_types(columns: dict[str, Any], ids: Any) -> dict[str, dict[str, Any]]:
    """``{column: {"dtype": "float64", "shape": [3]}}``: a row's type and shape."""
    out = {
        name: {"dtype": str(np.dtype(spec["dtype"])), "shape": list(spec["shape"])}
        for name, spec in columns.items()
    }
    if isinstance(ids, h5py.Dataset):
        out["labels"] = {"dtype": str(ids.dtype), "shape": []}
    return out


def _chunk_range(ids: np.ndarray) -> dict[str, list[int]] | None:
    """The lowest and highest chunk coordinates of ``ids`` per axis (None if empty)."""
    if len(ids) == 0:
        return None
    ids = np.asarray(ids, dtype=np.int64)
    # unpack_id for every id at once: three uint16 fields viewed as int16.
    coords = np.stack([(ids >> s) & 0xFFFF for s in (0, 16, 32)], axis=1)
    coords = coords.astype(np.uint16).view(np.int16).astype(np.int64)
    return {"min": coords.min(axis=0).tolist(), "max": coords.max(axis=0).tolist()}


def chunk_label(id: int) -> str:
    """``65536`` -> ``'(0, 1, 0)'``."""
    return "({}, {}, {})".format(*unpack_id(int(id)))


def _blocks(ds: h5py.Dataset, n: int) -> Any:
    """``ds[:n]`` in slices of at most ``_BLOCK_ROWS`` rows."""
    for start in range(0, min(n, ds.shape[0]), _BLOCK_ROWS):
        yield ds[start : min(n, start + _BLOCK_ROWS)]


def _extent(
    g: h5py.Group,
    keys: np.ndarray,
    counts: np.ndarray,
    columns: dict[str, Any],
    progress: ProgressFn,
    where: str,
) -> dict[str, list[float]] | None:
    """Per axis, the min and max of the set's positions (NaN rows ignored), read chunk
    by chunk; None when the set has no positions."""
    if "position" not in columns:
        return None
    lo = np.full(3, np.inf)
    hi = np.full(3, -np.inf)
    chunks = g.get("chunks")
    items = [(int(k), int(c)) for k, c in zip(keys, counts, strict=True) if c > 0]
    for key, count in progress(items, f"extent {where}", len(items)):
        ds = chunks.get(f"{key}/position") if chunks is not None else None
        if not isinstance(ds, h5py.Dataset) or ds.ndim != 2 or ds.shape[1] != 3:
            continue
        for block in _blocks(ds, count):
            block = block[~np.isnan(block).any(axis=1)]
            if len(block):
                lo = np.minimum(lo, block.min(axis=0))
                hi = np.maximum(hi, block.max(axis=0))
    if not np.isfinite(lo).all():
        return None
    return {"min": lo.tolist(), "max": hi.tolist()}


def _label_counts(
    g: h5py.Group,
    keys: np.ndarray,
    counts: np.ndarray,
    columns: dict[str, Any],
    progress: ProgressFn,
    where: str,
) -> dict[str, int]:
    """``{label: cells with it}``, sorted by label; a cell counts once per label of
    its label set. Ids are read chunk by chunk, ``_BLOCK_ROWS`` at a time."""
    table = labels_res.LabelSets.decode(g.attrs.get("labelsets"))
    per_id: dict[int, int] = {}

    def add(ids: np.ndarray) -> None:
        for i, n in zip(*np.unique(ids, return_counts=True), strict=True):
            per_id[int(i)] = per_id.get(int(i), 0) + int(n)

    rows = dict(zip(keys.tolist(), counts.tolist(), strict=True))
    lab = g.get(labels_res.GROUP)
    if isinstance(lab, h5py.Group) and isinstance(lab.get("values"), h5py.Dataset):
        values = lab["values"]
        lkeys, lcounts = lab["keys"][()], lab["counts"][()]
        offsets = np.concatenate([[0], np.cumsum(lcounts)])
        held = np.array([rows.get(k, 0) for k in lkeys.tolist()], dtype=np.int64)
        if (lcounts <= held).all():  # the usual case: one contiguous run of ids
            total = min(int(offsets[-1]), values.shape[0])
            starts = range(0, total, _BLOCK_ROWS)
            for s in progress(starts, f"labels {where}", len(starts)):
                add(values[s : min(total, s + _BLOCK_ROWS)])
        else:  # rows of cleared chunks: only those the index still counts
            items = list(enumerate(lkeys.tolist()))
            for i, key in progress(items, f"labels {where}", len(items)):
                n = min(int(lcounts[i]), rows.get(key, 0))
                start = int(offsets[i])
                for s in range(start, start + n, _BLOCK_ROWS):
                    add(values[s : min(start + n, s + _BLOCK_ROWS)])
    elif labels_res.LEGACY_COLUMN in columns:
        chunks = g.get("chunks")
        for key, n in progress(list(rows.items()), f"labels {where}", len(rows)):
            ds = chunks.get(f"{key}/{labels_res.LEGACY_COLUMN}") if chunks else None
            if isinstance(ds, h5py.Dataset):
                for block in _blocks(ds, n):
                    add(block)
    out: dict[str, int] = {}
    for i, n in per_id.items():
        for label in table.labels_of(i) if i in table.sets else ():
            out[label] = out.get(label, 0) + n
    return dict(sorted(out.items()))


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
