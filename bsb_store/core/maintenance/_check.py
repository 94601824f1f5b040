"""``check``: verify a store without changing it."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

import h5py

from .. import layout
from ..engine import _RootState
from ..writes import consolidate as merge
from ..writes.txn import JOURNAL, STAGING
from ..writes.undo import RollbackView, has_undo, undo_path
from ._common import (
    ERROR,
    WARNING,
    CheckReport,
    Finding,
    ProgressFn,
    _applied,
    _compact_temps,
    _int_attr,
    _open_root,
    _orphan_sidecars,
    _quiet,
    _session,
    _shards,
    _ShardState,
    damaged,
    is_damage,
    unsafe_global_heap,
)
from ._redo import RedoFailed, redone
from ._sets import _HDF5_ERRORS, BROKEN, SetChecks


class _Checker(SetChecks):
    """Collects findings and a summary while walking an open root."""

    def __init__(self, f: h5py.File, path: str, progress: ProgressFn):
        self.f = f
        self.path = path
        self.progress = progress
        self.findings: list[Finding] = []
        #: Operations of the complete journal redone in memory before the checks
        #: (``-1``: their list is unreadable), or None when there was none.
        self.redone: int | None = None
        #: Why redoing a complete journal in memory failed.
        self.redo_error: str | None = None
        self.summary: dict[str, Any] = {
            "placement": {},
            "connectivity": {},
            "morphologies": 0,
            "files": 0,
            "shards": {"total": 0, "live": 0, "dead": 0, "pending_calls": 0},
        }

    def error(self, code: str, where: str, msg: str, repairable: bool = False) -> None:
        self.findings.append(Finding(ERROR, code, where, msg, repairable))

    def guard(self, where: str, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)``; when reading the file fails there (it is damaged), a
        ``damaged`` error finding for ``where`` instead, and None."""
        try:
            return fn(*args)
        except Exception as e:
            if not is_damage(e):
                raise
            self.findings.append(damaged(where, e))
            return None

    def warn(self, code: str, where: str, msg: str, repairable: bool = False) -> None:
        self.findings.append(Finding(WARNING, code, where, msg, repairable))

    # ---------------------------------------------------------------- structure
    def structure(self) -> bool:
        """Root attributes, required groups and store datasets; False if the store
        group is too damaged to go on."""
        f = self.f
        for name in ("format_version", "written_by", "storage_id", "created_at"):
            if name not in f.attrs:
                self.error(
                    "missing-attribute", "/", f"The root attribute '{name}' is missing."
                )
        version = _int_attr(f, "format_version")
        if "format_version" in f.attrs and (version is None or version < 1):
            self.error(
                "format-version",
                "/",
                "The root attribute 'format_version' is "
                f"{f.attrs['format_version']!r}, expected an integer in "
                f"[1, {layout.FORMAT_VERSION}].",
            )
        groups = {g: self.node(f, g) for g in ("store", *layout.GROUPS)}
        for g, obj in groups.items():
            if obj is not BROKEN and not isinstance(obj, h5py.Group):
                self.error(
                    "missing-group",
                    f"/{g}",
                    f"The required group '/{g}' is "
                    "missing: the file is not a complete bsb-store root.",
                )
        if not isinstance(groups["store"], h5py.Group):
            return False
        return self._store_datasets()

    def _store_datasets(self) -> bool:
        f, ok = self.f, True
        specs = {"store/state": (1,), "store/chunk_size": (3,)}
        for p, shape in specs.items():
            ds = self.node(f, p)
            if ds is BROKEN:
                ok = False
            elif not isinstance(ds, h5py.Dataset) or ds.shape != shape:
                got = getattr(ds, "shape", "nothing")
                self.error(
                    "store-dataset",
                    p,
                    f"'{p}' must be a dataset of shape {shape}, found {got}.",
                )
                ok = False
        names = self.node(f, "store/shards/name")
        applied = self.node(f, "store/shards/applied")
        if names is BROKEN or applied is BROKEN:
            return False
        if not isinstance(names, h5py.Dataset) or not isinstance(applied, h5py.Dataset):
            self.error(
                "store-dataset",
                "store/shards",
                "The merged-shards table 'store/shards/{name,applied}' is missing.",
            )
            return False
        if names.shape != applied.shape:
            self.error(
                "store-dataset",
                "store/shards",
                f"The merged-shards table is "
                f"inconsistent: {names.shape[0]} names but {applied.shape[0]} "
                "merged counts.",
            )
            return False
        try:
            json.loads(f["store"].attrs.get("provenance", "{}"))
        except ValueError:
            self.error(
                "provenance",
                "store",
                "The provenance attribute of '/store' is not valid JSON.",
            )
        return ok

    def transactions(self) -> None:
        """The journal and staged objects of an interrupted transaction.

        Neither is an error in itself: a complete journal is redone, an incomplete one
        discarded, by the next writable open (or ``repair``), and the store is exact
        afterwards. ``check`` judges the store as that leaves it (:func:`check` redoes
        a complete journal in memory first, see :mod:`._redo`); only a journal whose
        redo fails is an error."""
        if self.redone is not None:
            self.warn(
                "journal",
                JOURNAL,
                "An interrupted transaction: its journal of "
                f"{_count(self.redone)} operations is complete but was not fully "
                "applied. The next writable open (or `bsb-store repair`) redoes it; "
                "until then read-only readers refuse the store. This report checks "
                "the store as the redo will leave it.",
                repairable=True,
            )
        g = self.node(self.f, JOURNAL)
        if g is not None and g is not BROKEN:
            ops = _complete_journal(self.f)
            if ops is not None:
                self.error(
                    "journal",
                    JOURNAL,
                    f"An interrupted transaction: its journal of {_count(ops)} "
                    "operations is complete but was not fully applied, and redoing "
                    f"it fails ({self.redo_error or 'not attempted'}): the next "
                    "writable open and `bsb-store repair` will fail the same way. "
                    "The findings below are of the half-applied store.",
                )
            else:
                self.warn(
                    "journal",
                    JOURNAL,
                    "An incomplete transaction journal (the writer died before "
                    "publishing anything): the next writable open (or `bsb-store "
                    "repair`) discards it; until then read-only readers refuse the "
                    "store.",
                    repairable=True,
                )
        s = self.node(self.f, STAGING)
        if s is not None and s is not BROKEN:
            n = len(s) if isinstance(s, h5py.Group) else 1
            self.warn(
                "staging",
                STAGING,
                f"{n} staged objects of a transaction that "
                "never published are left over (unreachable; `bsb-store repair` "
                "drops them).",
                repairable=True,
            )

    # ------------------------------------------------------------------- shards
    def shards(self, shards: list[_ShardState], applied: dict[str, int]) -> None:
        s = self.summary["shards"]
        for sh in shards:
            s["total"] += 1
            s["live" if sh.alive else "dead"] += 1
            who = f"{'live' if sh.alive else 'dead'} writer '{sh.name}'"
            merged = applied.get(sh.name, 0)
            if sh.unusable is not None:
                self.error(
                    "shard-format",
                    sh.path,
                    f"The shard of {who} cannot be merged by this bsb-store: "
                    f"{sh.unusable} Merges skip it (with a warning) and nothing "
                    "removes it; whatever it committed is not in the store.",
                )
                continue
            if sh.committed is None:
                self._unreadable(sh, who, merged)
                continue
            if sh.corrupt is not None:
                self.error(
                    "shard-checksum",
                    sh.path,
                    f"The shard of {who} holds a committed record whose data does not "
                    f"match its checksum: {sh.corrupt} Merges refuse this shard (every "
                    "read that merges raises) and `bsb-store repair` leaves it alone: "
                    "the calls from that record on are lost. To go on without them, "
                    "move the shard file out of the shards folder.",
                )
                continue
            if sh.committed < merged:
                self.error(
                    "shard-behind",
                    sh.path,
                    f"The root says {merged} log records "
                    f"of {who} were merged, but its shard commits only "
                    f"{sh.committed}: the shard is not the one that was merged.",
                )
            elif sh.committed > merged:
                s["pending_calls"] += sh.pending_calls
                self._pending(sh, who)
            elif not sh.alive:
                self.warn(
                    "dead-shard",
                    sh.path,
                    f"The shard of {who} is fully merged but "
                    "was not removed; `bsb-store repair` removes it.",
                    True,
                )
            if not sh.alive and sh.log_rows is not None and sh.log_rows > sh.committed:
                self.warn(
                    "uncommitted-tail",
                    sh.path,
                    f"The shard of {who} holds "
                    f"{sh.log_rows - sh.committed} uncommitted log records (the "
                    "call in flight when it died; never visible, dropped by "
                    "`bsb-store repair`).",
                    True,
                )

    def missing_shards(self) -> None:
        """Writers registered in the root whose shards are not next to it."""
        missing = merge.missing_shards(self.f, layout.shard_dir(self.path))
        if missing:
            self.error(
                "missing-shards",
                f"/{merge.REGISTERED}",
                merge.missing_text(self.path, missing) + ".",
            )

    def _pending(self, sh: _ShardState, who: str) -> None:
        text = (
            f"{sh.pending_calls} committed append calls ({sh.pending_records} log "
            f"records) of {who} are in its shard but not merged into the root"
        )
        if sh.alive:
            self.warn(
                "pending-live",
                sh.path,
                text + " (merged at the next read or when the writer closes).",
            )
        else:
            # An error (docs/cli.rst): the root file alone lacks these calls (a copy of
            # it, read-only readers and plain h5py miss them), although they are safe
            # in the shard and the next writable open or `repair` merges them.
            self.error(
                "pending-dead",
                sh.path,
                text + " (the writer died): the root file alone lacks them. The next "
                "writable open, or `bsb-store repair`, merges them into the root.",
                True,
            )

    def _unreadable(self, sh: _ShardState, who: str, merged: int) -> None:
        if sh.alive:
            self.warn(
                "shard-unreadable",
                sh.path,
                f"The shard of {who} cannot be read yet (the writer is starting).",
            )
        elif sh.hint > merged:
            self.error(
                "shard-lost",
                sh.path,
                f"The shard of {who} cannot be read, but it "
                f"committed {sh.hint - merged} log records the root lacks: they "
                "are lost.",
            )
        else:
            self.warn(
                "shard-unreadable",
                sh.path,
                f"The shard of {who} cannot be read "
                "and holds nothing committed (it died while starting); "
                "`bsb-store repair` removes it.",
                True,
            )

    def leftover_files(self) -> None:
        for p in _compact_temps(self.path):
            self.warn(
                "compact-temp",
                p,
                "A temporary file of an interrupted "
                "`bsb-store compact` is left over; `bsb-store repair` removes it.",
                True,
            )
        for p in _orphan_sidecars(self.path):
            self.warn(
                "orphan-sidecar",
                p,
                "A lock file of a dead writer without its "
                "shard; `bsb-store repair` removes it.",
                True,
            )

    def run(self, shards_of: Callable[[h5py.File], list[_ShardState]]) -> None:
        """Every check; each object whose reading fails (a damaged file) becomes a
        ``damaged`` finding and the checks go on with the next one."""
        f = self.f
        if not self.guard("/", self.structure):
            self.leftover_files()
            return
        self.guard(f"/{JOURNAL}", self.transactions)
        for group, fn in (
            ("placement", self.placement),
            ("connectivity", self.connectivity),
        ):
            g = self.guard(f"/{group}", self.node, f, group)
            if isinstance(g, h5py.Group):
                names = self.guard(f"/{group}", lambda g=g: sorted(g.keys()))
                for name in self.progress(names or [], f"{group} sets", None):
                    self.guard(f"/{group}/{name}", fn, name)
        for group, fn in (("morphologies", self.morphologies), ("files", self.files)):
            if isinstance(self.guard(f"/{group}", self.node, f, group), h5py.Group):
                self.guard(f"/{group}", fn)
        shards = self.guard("/store/shards", lambda: (shards_of(f), _applied(f)))
        if shards is not None:
            self.shards(*shards)
        self.guard(f"/{merge.REGISTERED}", self.missing_shards)
        self.leftover_files()


def _complete_journal(f: h5py.File) -> int | None:
    """The number of operations of a complete journal in ``f`` (``-1`` if their list
    cannot be read); None if there is no journal, or an incomplete or unopenable
    one."""
    try:
        g = f[JOURNAL]
        if not g.attrs.get("complete", 0):
            return None
    except _HDF5_ERRORS:
        return None
    try:
        return len(json.loads(g.attrs["ops"]))
    except (*_HDF5_ERRORS, TypeError):
        return -1


def _count(ops: int) -> str:
    return "?" if ops < 0 else str(ops)


def _run(c: _Checker, f: h5py.File, path: str, st: _RootState, interrupted: bool) -> None:
    """Run the checks of ``c`` on ``f``, or, when ``f`` holds a complete journal, on
    the store as the journal's redo will leave it (redone in memory; the file is not
    touched). A redo that fails is reported, and ``f`` is checked as it is."""
    ops = _complete_journal(f)
    if ops is not None:
        base: Any = RollbackView(path) if interrupted else open(path, "rb")  # noqa: SIM115
        try:
            with redone(base) as rf:
                c.f, c.redone = rf, ops
                try:
                    c.run(lambda g: _shards(g, path, st))
                finally:
                    c.f = f
            return
        except RedoFailed as e:
            c.redo_error = str(e)
    c.run(lambda g: _shards(g, path, st))


def check(
    root: str | os.PathLike,
    *,
    locking: str | None = None,
    progress: ProgressFn | None = None,
) -> CheckReport:
    """Verify a store without changing it (see the module docstring).

    :raises StoreNotFoundError: no file at ``root``.
    :raises NotAStoreError: ``root`` is not a bsb-store file (empty, foreign, truncated).
    :raises FormatVersionError: written by a newer format version.
    :raises LockTimeoutError: another process held the store's lock too long.
    """
    with _session(root, locking, exclusive=False) as (path, st, _):
        interrupted = has_undo(path)  # under the shared lock: its writer is dead
        hang = unsafe_global_heap(path)
        if hang is not None:  # HDF5 would never return: read nothing
            c = _Checker(None, path, progress or _quiet)  # type: ignore[arg-type]
            c.error("damaged", path, f"damaged: {path}: {hang}.")
        else:
            f = _open_root(path, "r")  # as the rollback will leave it, if interrupted
            try:
                c = _Checker(f, path, progress or _quiet)
                c.guard(path, _run, c, f, path, st, interrupted)
            finally:
                f.close()
    findings = c.findings
    if interrupted:
        findings.insert(
            0,
            Finding(
                WARNING,
                "interrupted-session",
                undo_path(path),
                "a writer died during a write session; its undo log restores the "
                "root as it was before that session at the next open (or `repair`). "
                "This report checks the root as restored.",
                repairable=True,
            ),
        )
    return CheckReport(path, findings, c.summary)
