"""``compact``: rewrite a store with only the data readers can reach."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
import uuid
from collections.abc import Iterator

import h5py

from ...exceptions import StoreExistsError
from ..engine import _RootState
from ..resources import connectivity as conn_res
from ..resources import placement as place_res
from ..writes import consolidate as merge
from ..writes.txn import JOURNAL, STAGING
from ._check import check
from ._common import (
    CompactReport,
    ProgressFn,
    _abspath,
    _quiet,
    _session,
    damaged,
    is_damage,
)
from ._repair import _repair_root

#: Rows copied per read/write (bounded memory).
COPY_ROWS = 2**18


def compact(
    root: str | os.PathLike,
    out: str | os.PathLike | None = None,
    *,
    locking: str | None = None,
    progress: ProgressFn | None = None,
) -> CompactReport:
    """Rewrite the store with only the data readers can reach, dropping garbage tails,
    unreachable leftovers and HDF5 free space.

    Pending shard data is merged first. The copy is written to a temporary file next to
    the target, flushed to disk and renamed over the target (``out``, or the root
    itself) under the exclusive lock, so a crash leaves the old file or the new one.
    Refuses (``refused`` set, nothing changed) when :func:`check` finds errors.

    Compacting never makes a file bigger: when the rewrite is not smaller than the root
    (HDF5 lays out a fresh file's metadata less tightly than a file that grew in place,
    so a store without garbage can come out larger), it is dropped and the root's own
    bytes are kept (``kept`` set): the root stays as it is, or ``out`` gets a plain copy.

    :raises StoreExistsError: ``out`` exists and is not the root.
    """
    path = _abspath(root)
    target = path if out is None else _abspath(out)
    if target != path and os.path.exists(target):
        raise StoreExistsError(f"Cannot compact into '{target}': it exists.", path=target)
    report = check(path, locking=locking, progress=progress)
    size = os.path.getsize(path)
    # A dead writer's unmerged calls are an error of the root alone; compact merges
    # them first, like every pending call.
    errors = [f for f in report.errors if f.code != "pending-dead"]
    if errors:
        return CompactReport(
            path,
            target,
            size,
            size,
            refused="the store has errors; run `bsb-store repair` first",
            errors=errors,
        )
    try:
        return _compact(path, target, size, locking, progress)
    except _CopyFailed as e:
        finding = damaged(e.where, e.__cause__ or e)
        return CompactReport(
            path,
            target,
            size,
            size,
            refused=f"{finding.message}; the store was not rewritten",
            errors=[finding],
        )


class _CopyFailed(Exception):
    """Reading an object of the root failed while copying it (the file is damaged)."""

    def __init__(self, where: str):
        super().__init__(where)
        self.where = where


@contextlib.contextmanager
def _copying(where: str) -> Iterator[None]:
    """An error that says the file is damaged becomes :class:`_CopyFailed` naming
    ``where`` (the innermost object being copied)."""
    try:
        yield
    except _CopyFailed:
        raise
    except Exception as e:
        if not is_damage(e):
            raise
        raise _CopyFailed(where) from e


def _compact(
    path: str, target: str, size: int, locking: str | None, progress: ProgressFn | None
) -> CompactReport:
    with _session(path, locking, exclusive=True) as (_, st, engine):
        merged, changed = _premerge(path, st, engine.locking)
        tmp = f"{target}.compact-{uuid.uuid4().hex[:12]}.tmp"
        kept = False
        try:
            with (
                h5py.File(path, "r", locking=False) as src,
                h5py.File(tmp, "w", locking=False) as dst,
            ):
                _copy_live(src, dst, progress or _quiet)
            # Never bigger: a rewrite that saves nothing is dropped (the merged root is
            # the baseline; what the merge added is the store's data, not growth).
            kept = os.path.getsize(tmp) >= os.path.getsize(path)
            if kept:
                os.unlink(tmp)
                if target != path:
                    shutil.copyfile(path, tmp)
            if target != path:  # a new store: no writer's shard belongs to it
                merge.forget_registered(tmp)
            if not (kept and target == path):
                os.chmod(tmp, stat.S_IMODE(os.stat(path).st_mode))
                _fsync(tmp)
                os.replace(tmp, target)
                _fsync(os.path.dirname(target))
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        finally:
            if changed or (target == path and not kept):
                st.lock.bump_generation()
    return CompactReport(path, target, size, os.path.getsize(target), merged, kept=kept)


def _premerge(path: str, st: _RootState, locking: str) -> tuple[list[str], bool]:
    """Merge pending shard data (lock held) so that the copy holds every call."""
    actions = _repair_root(path, st, locking)
    return actions, bool(actions)


def _fsync(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _copy_live(src: h5py.File, dst: h5py.File, progress: ProgressFn) -> None:
    with _copying("/"):
        _copy_attrs(src, dst)
    for name in list(src):
        with _copying(f"/{name}"):
            _copy_object(src, dst, name, progress)


def _copy_object(src: h5py.File, dst: h5py.File, name: str, progress: ProgressFn):
    obj = src[name]
    if name == "store":
        g = dst.create_group("store")
        _copy_attrs(obj, g)
        for child in obj:
            if f"store/{child}" not in (JOURNAL, STAGING):
                src.copy(obj[child], g, name=child)
        g["state"][0] = int(g["state"][0]) + 1  # a new file: caches must reload
    elif name in (place_res.GROUP, conn_res.GROUP):
        g = dst.create_group(name)
        _copy_attrs(obj, g)
        for set_name in progress(sorted(obj), f"compact {name}", len(obj)):
            with _copying(f"/{name}/{set_name}"):
                _copy_set(obj[set_name], g.create_group(set_name), name)
    else:
        src.copy(obj, dst, name=name)


def _copy_set(sg: h5py.Group, dg: h5py.Group, kind: str) -> None:
    """Copy one chunked set: the index and other members as-is; of the chunk tree,
    only the chunk groups in the index, their registered columns cut to the count."""
    if kind == place_res.GROUP:
        chunk_path, roots = place_res._chunk_path, ("chunks",)
    else:
        chunk_path, roots = conn_res._chunk_path, conn_res.DIRECTIONS
    _copy_attrs(sg, dg)
    for name, obj in sg.items():
        if name in roots:
            _copy_attrs(obj, dg.create_group(name))
        else:
            sg.copy(obj, dg, name=name)
    columns = json.loads(sg.attrs.get("columns", "{}"))
    keys, counts = sg["index/key"][()], sg["index/count"][()]
    for key, n in zip(keys, counts):
        cp = chunk_path(tuple(int(v) for v in key))
        src, dst = sg[cp], dg.require_group(cp)
        _copy_attrs(src, dst)
        for col in columns:
            if col in src:
                _copy_rows(src[col], dst, col, int(n))


def _copy_rows(ds: h5py.Dataset, parent: h5py.Group, name: str, n: int) -> None:
    out = parent.create_dataset(
        name,
        (n, *ds.shape[1:]),
        dtype=ds.dtype,
        chunks=ds.chunks,
        maxshape=ds.maxshape if ds.chunks else None,
        compression=ds.compression,
        compression_opts=ds.compression_opts,
        shuffle=ds.shuffle,
        fletcher32=ds.fletcher32,
        fillvalue=ds.fillvalue,
    )
    for start in range(0, n, COPY_ROWS):
        end = min(n, start + COPY_ROWS)
        out[start:end] = ds[start:end]
    _copy_attrs(ds, out)


def _copy_attrs(src: h5py.HLObject, dst: h5py.HLObject) -> None:
    """Copy every attribute, keeping its stored type (fixed or variable strings)."""
    for k in src.attrs:
        dst.attrs.create(k, src.attrs[k], dtype=src.attrs.get_id(k).dtype)
