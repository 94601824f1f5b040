"""Merging committed shard data into the root file.

Runs inside a root transaction (exclusive root lock held). For every shard file next to
the root it reads the committed log rows past the count the root says it already merged,
hands the calls to the applier of each resource kind, and publishes the new merged
count in the same transaction as the data. So after a crash either the data and the
count are both visible or neither is, and merging again never duplicates rows.

Resources register an applier per stream kind (``"P"`` placement, ``"C"``
connectivity, ``"S"`` store-level values) with :func:`register_applier`: one mechanism
serves every resource.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING

import h5py
import numpy as np

from ...exceptions import FormatError, PendingDataWarning, ShardChecksumError
from ..locking import LockingMode, SidecarLock
from .shard import (
    Call,
    ShardWriter,
    check_shard_format,
    list_shards,
    read_calls,
    read_commit_hint,
    remove_shard,
    shard_paths,
    writer_alive,
)
from .txn import Transaction, payload_bytes

if TYPE_CHECKING:
    pass

#: kind -> applier(txn, set name, calls holding only that set's records)
Applier = Callable[[Transaction, str, list[Call]], None]
_APPLIERS: dict[str, Applier] = {}


def register_applier(kind: str, applier: Applier) -> None:
    _APPLIERS[kind] = applier


#: Writers that may hold unmerged data for the root: a writer registers its shard
#: here (in a write session) when it creates it, before its first call returns; the
#: merge that retires the shard unregisters it. A root whose registered shards are
#: missing was copied or moved without its sidecars (absent in roots of earlier
#: versions: nothing registered).
REGISTERED = "store/shards/registered"


def registered(f: h5py.File) -> list[str]:
    """The names of the writers registered in the root ``f``."""
    if REGISTERED not in f:
        return []
    return [str(n) for n in f[REGISTERED].asstr()[()]]


def register(txn: Transaction, name: str) -> None:
    """Register the shard of writer ``name`` in the root of ``txn``."""
    f = txn.file
    if REGISTERED not in f:  # inside the write session: undone with it
        f["store/shards"].create_dataset(
            "registered", (0,), dtype=h5py.string_dtype(), maxshape=(None,), chunks=(64,)
        )
    names = registered(f)
    if name not in names:
        txn.resize(REGISTERED, len(names) + 1)
        txn.write(REGISTERED, len(names), np.asarray([name], dtype=object))


def unregister(txn: Transaction, names: set[str]) -> None:
    """Unregister the shards of the writers ``names`` (their data is in the root)."""
    current = registered(txn.file)
    keep = [n for n in current if n not in names]
    if len(keep) != len(current):
        txn.resize(REGISTERED, len(keep))
        if keep:
            txn.write(REGISTERED, 0, np.asarray(keep, dtype=object))


def unregister_all(txn: Transaction) -> None:
    """Forget every registered writer (their shards are being deleted, merged)."""
    unregister(txn, set(registered(txn.file)))


def forget_registered(path: str) -> None:
    """Clear the registrations of a fresh copy of a root (a file no writer knows, with
    no shards: a copy made after a merge holds all the data)."""
    with h5py.File(path, "r+", locking=False) as f:
        if REGISTERED in f:
            f[REGISTERED].resize((0,))


def missing_shards(f: h5py.File, shard_dir: str) -> list[str]:
    """Registered writers whose shard file is not in ``shard_dir``."""
    return [
        n for n in registered(f) if not os.path.exists(os.path.join(shard_dir, n + ".h5"))
    ]


def missing_text(root: str, missing: list[str]) -> str:
    """What a root whose registered shards are missing means, and what to do."""
    return (
        f"'{root}' was copied or moved without its sidecars: {len(missing)} "
        f"writers' data is not in it (their shards "
        f"{', '.join(repr(n + '.h5') for n in missing[:3])}"
        f"{' and more' if len(missing) > 3 else ''} are not in "
        f"'{os.path.basename(root)}.shards'). Copy a store with "
        "`bsb-store compact ROOT COPY` or HDF5Engine.copy, which merge first, or merge "
        "first (any read, or `bsb-store repair` at the original place) and copy then"
    )


def _applied_table(f: h5py.File) -> dict[str, tuple[int, int]]:
    names = f["store/shards/name"].asstr()[()]
    applied = f["store/shards/applied"][()]
    return {n: (i, int(a)) for i, (n, a) in enumerate(zip(names, applied))}


def pending(
    f: h5py.File | None,
    shard_dir: str,
    own: ShardWriter | None,
    applied_cache: dict[str, int] | None = None,
) -> bool:
    """Cheap check: does any shard hold committed rows the root has not merged?"""
    if own is not None and own.closed:  # it failed and closed: a dead writer's
        own = None
    table = (
        applied_cache
        if applied_cache is not None
        else ({k: v for k, (_, v) in _applied_table(f).items()} if f is not None else {})
    )
    for path in _shard_paths(shard_dir, own):
        name = os.path.basename(path)[:-3]
        if own is not None and name == own.name:
            committed = own.committed
        else:
            committed = read_commit_hint(shard_paths(path)[0])
        if committed > table.get(name, 0):
            return True
    return False


def _shard_paths(shard_dir: str, own: ShardWriter | None) -> list[str]:
    """The shard files to merge: those in ``shard_dir``, and this process's own shard
    when its file was deleted behind its back while the root stayed (``rm -rf
    ROOT.shards``): its committed calls are still readable through the open handle,
    and merging them keeps every call that returned."""
    paths = list_shards(shard_dir)
    if own is not None and own.path not in paths and own.orphan_mergeable():
        paths.append(own.path)
    return paths


def consolidate(
    txn: Transaction, shard_dir: str, own: ShardWriter | None, locking: LockingMode
) -> list[str]:
    """Merge every shard's unmerged committed calls into ``txn``; return the shard
    files of dead writers that are now fully merged (delete them after the commit)."""
    if own is not None and own.closed:  # it failed and closed: a dead writer's
        own = None
    f = txn.file
    table = _applied_table(f)
    names = list(table)
    applied = [a for _, a in table.values()]
    retired = []
    changed = False
    gathered: list[Call] = []  # every shard's calls, dispatched once: appliers see
    for path in _shard_paths(shard_dir, own):  # one consistent view of each set
        name = os.path.basename(path)[:-3]
        start = table.get(name, (None, 0))[1]
        is_own = own is not None and name == own.name
        if is_own:
            calls, committed = own.read_calls(start)
        else:
            hint = read_commit_hint(shard_paths(path)[0])
            dead = not writer_alive(path)
            if hint <= start and not dead:
                continue
            calls, committed = _read_foreign(path, start, locking, hint, dead)
            if dead and committed is not None:
                retired.append(path)
        if not calls:
            continue
        gathered.extend(calls)
        if name in table:
            applied[table[name][0]] = committed
        else:
            names.append(name)
            applied.append(committed)
            table[name] = (len(names) - 1, committed)
        changed = True
    if gathered:
        # Announce the whole merge before writing any of it: a full disk is refused
        # here (DiskFullError), with every shard kept, not in the middle of HDF5.
        groups = {
            (r.stream[0], r.stream[1], r.key0, r.key1)
            for c in gathered
            for r in c.records
        }
        txn.reserve(
            sum(payload_bytes(r.rows) for c in gathered for r in c.records),
            len(groups),
            f"merging {len(gathered)} pending append calls",
        )
        _dispatch(txn, gathered)
    if retired:
        unregister(txn, {os.path.basename(p)[:-3] for p in retired})
    if changed:
        txn.resize("store/shards/name", len(names))
        txn.write("store/shards/name", 0, np.asarray(names, dtype=object))
        txn.resize("store/shards/applied", len(applied))
        txn.write("store/shards/applied", 0, np.asarray(applied, dtype=np.int64))
    return retired


def _read_foreign(
    path: str, start: int, locking: LockingMode, hint: int, dead: bool
) -> tuple[list[Call], int | None]:
    """Read another process's committed calls under its shard's shared lock. The commit
    record is the count in the shard's lock file; a closed shard also keeps a copy.

    Returns the calls and the committed log row count, or ``None`` for the count when
    the shard must stay (it is not retired even if its writer is dead):

    * a shard of this format that cannot be read or whose committed rows do not
      decode, although its writer committed rows (or still runs): warned about
      (PendingDataWarning), kept for ``repair`` and inspection;
    * a shard of a newer format, or a foreign file: warned about and never merged, so
      the root is never changed by data this bsb-store does not understand.

    A dead writer's shard that cannot be read (or is torn: no format attribute, or
    missing datasets) and whose commit record is 0 (absent or zero) is a writer killed
    while it created the shard, before its first flush: it committed nothing, so
    nothing is lost; it is retired silently (count 0).
    """
    lock_path = shard_paths(path)[0]
    lock = SidecarLock(lock_path, locking)
    try:
        with lock.shared():
            committed = max(hint, read_commit_hint(lock_path))
            try:
                with h5py.File(path, "r", locking=False) as sf:
                    try:
                        ours = check_shard_format(sf)
                    except FormatError as e:  # a newer format, or not a shard
                        warnings.warn(
                            f"Shard '{path}' is skipped, not merged: {e} Its data "
                            "stays in the shard.",
                            PendingDataWarning,
                            stacklevel=3,
                        )
                        return [], None
                    if not ours:
                        raise _Unreadable("it has no format attribute (torn creation)")
                    committed = max(committed, int(sf["committed"][0]))
                    return read_calls(sf, start, committed)
            except ShardChecksumError:
                raise  # torn or zeroed committed data: never merged, never dropped
            # FormatError (rows that do not decode) is an OSError too.
            except (_Unreadable, OSError, KeyError, ValueError, IndexError) as e:
                if dead and committed <= 0:
                    # Killed before its first flush: nothing committed, nothing lost.
                    return [], 0
                warnings.warn(
                    f"Shard '{path}' could not be read ({e}); its writer "
                    f"{'died' if dead else 'runs'} and committed {committed} log "
                    f"records ({max(0, committed - start)} not merged yet), which "
                    "cannot be merged. The shard is kept; `bsb-store check` reports "
                    "it.",
                    PendingDataWarning,
                    stacklevel=3,
                )
                return [], None
    finally:
        lock.close()


class _Unreadable(Exception):
    """A shard file without its format attribute (torn at its first flush)."""


def _dispatch(txn: Transaction, calls: list[Call]) -> None:
    """Split calls per (kind, set) in commit order and hand them to appliers."""
    grouped: dict[tuple[str, str], list[Call]] = {}
    for call in calls:
        per_set: dict[tuple[str, str], Call] = {}
        for rec in call.records:
            key = (rec.stream[0], rec.stream[1])
            per_set.setdefault(key, Call(call.seq)).records.append(rec)
        for key, sub in per_set.items():
            grouped.setdefault(key, []).append(sub)
    for (kind, set_name), set_calls in grouped.items():
        applier = _APPLIERS.get(kind)
        if applier is None:
            warnings.warn(
                f"No applier for stream kind {kind!r}; dropped {len(set_calls)} calls.",
                PendingDataWarning,
                stacklevel=2,
            )
            continue
        applier(txn, set_name, set_calls)


def drop_calls(target: str, calls: list[Call]) -> None:
    """Warn that committed calls are dropped because their target no longer exists."""
    warnings.warn(
        f"Dropped {len(calls)} committed append calls: {target}.",
        PendingDataWarning,
        stacklevel=3,
    )


def remove_retired(paths: list[str]) -> None:
    for p in paths:
        with contextlib.suppress(OSError):
            remove_shard(p)
