"""``repair``: recover what a crash left, and say what was done."""

from __future__ import annotations

import contextlib
import json
import os
import warnings

import h5py

from .. import layout
from ..engine import _bump_state, _RootState
from ..writes import consolidate as merge
from ..writes.shard import remove_shard
from ..writes.txn import JOURNAL, STAGING, Transaction, recover
from ._check import check
from ._common import (
    ProgressFn,
    RepairReport,
    _applied,
    _compact_temps,
    _orphan_sidecars,
    _session,
    _shards,
    _ShardState,
    _writable_root,
    damage_text,
    is_damage,
)


def repair(
    root: str | os.PathLike,
    *,
    locking: str | None = None,
    progress: ProgressFn | None = None,
) -> RepairReport:
    """Recover what a crash left (see the module docstring); idempotent.

    Does nothing when :func:`check` finds nothing repairable. Problems it cannot fix
    (lost data) stay in the returned report's ``after``.

    :raises StoreNotFoundError, NotAStoreError, FormatVersionError: as :func:`check`.
    """
    before = check(root, locking=locking, progress=progress)
    if any(f.code == "shard-checksum" for f in before.errors):
        # Merging the other shards would merge that one too (and fail).
        return RepairReport(
            before.root,
            [],
            before,
            refused="a shard holds a committed record that fails its checksum (torn "
            "or zeroed on disk); nothing is merged while it is there. Move that "
            "shard out of the shards folder to merge the rest without its data",
        )
    if not before.repairable:
        return RepairReport(before.root, [], before)
    blocking = {"missing-group", "store-dataset"}
    if any(f.code in blocking for f in before.errors):
        return RepairReport(before.root, [], before)  # too damaged to touch
    if any(f.code == "damaged" for f in before.errors):
        # HDF5 writing through damaged metadata can spread the damage: never.
        return RepairReport(
            before.root,
            [],
            before,
            refused="parts of the root file cannot be read (damaged), and repair "
            "never writes into a damaged file; the committed data of writers stays "
            "in their shards. Copy what can be read into a new store",
        )
    actions: list[str] = []
    try:
        with _session(root, locking, exclusive=True) as (path, st, engine):
            actions += _repair_root(path, st, engine.locking)
            actions += _remove_leftovers(path)
    except Exception as e:
        if not is_damage(e):
            raise
        # The write session was rolled back: the root is as it was.
        after = check(root, locking=locking, progress=progress)
        return RepairReport(
            after.root,
            actions,
            after,
            refused=f"{damage_text(after.root, e)}; repair stopped there (an "
            "unfinished write to the root was rolled back)",
        )
    return RepairReport(path, actions, check(path, locking=locking, progress=progress))


def _repair_root(path: str, st: _RootState, locking: str) -> list[str]:
    """Journal, staging and shard merging, in one writable open (lock held)."""
    if st.writer is not None:
        st.writer.commit_pending()
    actions: list[str] = []
    changed = False
    retired: list[str] = []
    shards: dict[str, _ShardState] = {}
    with _writable_root(path, st) as (f, rolled_back):
        actions += rolled_back
        recovered, changed = _recover_journal(f)
        actions += recovered
        shards = {s.name: s for s in _shards(f, path, st)}
        merged, retired = _merge(f, path, st, locking, shards)
        changed = changed or bool(merged)
        actions += merged
    if changed:
        st.lock.bump_generation()
    for p in retired:
        sh = shards.get(os.path.basename(p)[:-3])
        remove_shard(p)
        if sh is not None and sh.committed is None:  # retired by the merge as empty
            actions.append(
                f"removed the empty, unreadable shard of dead writer '{sh.name}'"
            )
            continue
        actions.append(f"removed the merged shard of dead writer '{os.path.basename(p)}'")
        if (
            sh is not None
            and sh.log_rows is not None
            and sh.log_rows > (sh.committed or 0)
        ):
            actions.append(
                f"dropped its uncommitted tail of "
                f"{sh.log_rows - (sh.committed or 0)} log records"
            )
    for sh in shards.values():
        if (
            sh.committed is None
            and sh.unusable is None  # a newer or foreign shard is never removed
            and not sh.alive
            and sh.hint <= 0
            and os.path.exists(sh.path)
        ):
            remove_shard(sh.path)
            actions.append(
                f"removed the empty, unreadable shard of dead writer '{sh.name}'"
            )
    return actions


def _recover_journal(f: h5py.File) -> tuple[list[str], bool]:
    """Redo or discard an interrupted journal and drop staging; (actions, changed)."""
    actions = []
    used: set[str] = set()  # staged objects a redone journal moves into place
    g = f.get(JOURNAL)
    if g is not None:
        complete = bool(g.attrs.get("complete", 0))
        ops = json.loads(g.attrs["ops"]) if complete else []
        used = {op["src"] for op in ops if op["op"] == "replace"}
        actions.append(
            f"redid an interrupted transaction ({len(ops)} journaled operations)"
            if complete
            else "discarded an incomplete transaction journal"
        )
    s = f.get(STAGING)
    left = (
        [n for n in s if f"{STAGING}/{n}" not in used]
        if isinstance(s, h5py.Group)
        else []
    )
    outcome = recover(f)
    if outcome and left:
        actions.append(f"dropped {len(left)} staged leftover objects")
    return actions, bool(outcome)


def _merge(
    f: h5py.File, path: str, st: _RootState, locking: str, shards: dict[str, _ShardState]
) -> tuple[list[str], list[str]]:
    """Merge committed shard calls in one transaction; (actions, retired shards)."""
    before = _applied(f)
    txn = Transaction(f)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        retired = merge.consolidate(txn, layout.shard_dir(path), st.writer, locking)  # type: ignore[arg-type]
    actions = []
    if not txn.empty:
        _bump_state(txn)
        txn.commit()
        for name, n in _applied(f).items():
            d = n - before.get(name, 0)
            sh = shards.get(name)
            if d > 0:
                who = "live" if sh is not None and sh.alive else "dead"
                calls = f"{sh.pending_calls} calls, " if sh and sh.committed == n else ""
                actions.append(
                    f"merged {calls}{d} committed log records of {who} "
                    f"writer '{name}' into the root"
                )
    actions += [f"note: {w.message}" for w in caught]
    return actions, retired


def _remove_leftovers(path: str) -> list[str]:
    actions = []
    for p in _compact_temps(path):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(p)
        actions.append(f"removed the leftover compaction file '{os.path.basename(p)}'")
    for p in _orphan_sidecars(path):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(p)
        actions.append(f"removed the orphan shard sidecar '{os.path.basename(p)}'")
    return actions
