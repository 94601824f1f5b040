"""Shared pieces of the maintenance functions: reports, opening a root under its lock,
and reading shards without merging them."""

from __future__ import annotations

import contextlib
import errno
import glob
import json
import mmap
import os
import struct
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import h5py
import numpy as np

from ...exceptions import (
    FormatError,
    FormatVersionError,
    MissingDataError,
    NotAStoreError,
    ShardChecksumError,
    StoreError,
    StoreNotFoundError,
)
from .. import layout
from ..engine import HDF5Engine, _open, _open_session, _RootState
from ..locking import SidecarLock
from ..writes.shard import (
    check_shard_format,
    list_shards,
    read_calls,
    read_commit_hint,
    shard_paths,
    writer_alive,
)
from ..writes.undo import has_undo, open_view, rollback

#: ``progress(items, description, total)`` wraps an iterable to report progress.
ProgressFn = Callable[[Iterable[Any], str, int | None], Iterable[Any]]
ERROR, WARNING = "error", "warning"
_SAMPLES = 5  # example paths or values quoted per finding


def _quiet(items: Iterable[Any], _desc: str, _total: int | None) -> Iterable[Any]:
    return items


# ------------------------------------------------------------------------- damage
#: What reading a damaged file can raise: h5py maps HDF5 errors to KeyError, OSError,
#: RuntimeError and ValueError; numpy, on the garbage a damaged dataset holds, raises
#: the others (a corrupt shape can ask for more memory than there is).
DAMAGE_ERRORS = (
    KeyError,
    OSError,
    RuntimeError,
    ValueError,
    TypeError,
    IndexError,
    ArithmeticError,
    MemoryError,
)


def is_damage(error: BaseException) -> bool:
    """Whether ``error`` says the file is damaged, rather than that the command cannot
    run here (a lock timeout, a read-only place, a full disk: those stay errors)."""
    if isinstance(error, StoreError):
        return isinstance(error, (FormatError, MissingDataError))
    if isinstance(error, OSError) and error.errno in _NOT_DAMAGE_ERRNOS:
        return False
    text = str(error)
    if any(m in text for m in ("No space left", "Disk quota", "Read-only file system")):
        return False  # a write that failed (HDF5 puts the errno in its message)
    return isinstance(error, DAMAGE_ERRORS)


#: The errors of a write or of this user's rights, never of a damaged file.
_NOT_DAMAGE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}


def damage_text(where: str, error: BaseException) -> str:
    """``damaged: <object>: <error>``."""
    text = str(error).strip() or type(error).__name__
    if isinstance(error, (KeyError, MemoryError, TypeError, IndexError)):
        text = f"{type(error).__name__}: {text}"
    return f"damaged: {where}: {text}"


def damaged(where: str, error: BaseException) -> Finding:
    """The error finding for an object that cannot be read."""
    return Finding(ERROR, "damaged", where, damage_text(where, error))


_GCOL = b"GCOL"
_GCOL_HEADER = struct.Struct("<4sB3xQ")  # signature, version, reserved, size
_GCOL_OBJECT = struct.Struct("<HH4xQ")  # index, references, reserved, size


def unsafe_global_heap(path: str) -> str | None:
    """What in ``path`` would send HDF5 into an endless loop, or None.

    HDF5 (up to 2.0 at least) decodes a global heap collection, where variable-length
    strings live, object by object; an object header that a flipped byte turned into
    index 0 and size 0 never advances it, and the reading process hangs forever at
    100 % CPU. No HDF5 call can be guarded against that, so the collections are
    checked here first (one pass over the file's bytes)."""
    try:
        fh = open(path, "rb")  # noqa: SIM115
    except OSError:
        return None
    with fh:
        size = os.fstat(fh.fileno()).st_size
        if size < _GCOL_HEADER.size:
            return None
        with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as m:
            at = m.find(_GCOL)
            while at != -1:
                problem = _gcol_problem(m, at, size)
                if problem is not None:
                    return problem
                at = m.find(_GCOL, at + 1)
    return None


def _gcol_problem(m: mmap.mmap, at: int, size: int) -> str | None:
    if at + _GCOL_HEADER.size > size:
        return None
    _, version, length = _GCOL_HEADER.unpack_from(m, at)
    end = at + length
    if version != 1 or end > size:
        return None  # HDF5 refuses it with an error (or it is no collection)
    p = at + _GCOL_HEADER.size
    while p + _GCOL_OBJECT.size <= end:
        index, _, obj_size = _GCOL_OBJECT.unpack_from(m, p)
        need = _GCOL_OBJECT.size + (-(-obj_size // 8) * 8) if index else obj_size
        if need % 2**64 == 0:
            return (
                f"the global heap collection at byte {at} (variable-length strings) "
                f"holds an object header of size 0 at byte {p}, on which HDF5 would "
                "loop forever"
            )
        p += need
    return None


# ------------------------------------------------------------------------ reports
@dataclass(frozen=True)
class Finding:
    """One problem found by :func:`check`.

    :param severity: ``"error"`` or ``"warning"``.
    :param code: a stable short name of the kind of problem (e.g. ``"missing-dataset"``).
    :param path: the HDF5 path, or the file, it concerns.
    :param message: what is wrong, with the numbers involved and what to do.
    :param repairable: whether :func:`repair` fixes it.
    """

    severity: str
    code: str
    path: str
    message: str
    repairable: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "severity": self.severity,
            "code": self.code,
            "path": self.path,
            "message": self.message,
            "repairable": self.repairable,
        }


@dataclass
class CheckReport:
    """Everything :func:`check` found, plus a summary of what the store holds."""

    root: str
    findings: list[Finding] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == ERROR]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == WARNING]

    @property
    def ok(self) -> bool:
        """No errors (warnings allowed)."""
        return not self.errors

    @property
    def repairable(self) -> list[Finding]:
        return [f for f in self.findings if f.repairable]

    def to_dict(self) -> dict[str, Any]:
        return {
            "root": self.root,
            "ok": self.ok,
            "errors": [f.to_dict() for f in self.errors],
            "warnings": [f.to_dict() for f in self.warnings],
            "summary": self.summary,
        }


@dataclass
class RepairReport:
    """What :func:`repair` did, and the :func:`check` of the store afterwards."""

    root: str
    actions: list[str]
    after: CheckReport
    #: Why repair left the root untouched although it found repairable problems.
    refused: str | None = None

    @property
    def changed(self) -> bool:
        return bool(self.actions)

    @property
    def ok(self) -> bool:
        return self.after.ok and self.refused is None

    def to_dict(self) -> dict[str, Any]:
        return {
            "root": self.root,
            "ok": self.ok,
            "changed": self.changed,
            "actions": self.actions,
            "refused": self.refused,
            "remaining_errors": [f.to_dict() for f in self.after.errors],
            "remaining_warnings": [f.to_dict() for f in self.after.warnings],
        }


@dataclass
class CompactReport:
    """Sizes before and after :func:`compact`; ``refused`` says why nothing was done;
    ``kept`` that the rewrite would not have been smaller, so the store's own bytes were
    kept (``root`` untouched, or copied as they are to ``target``)."""

    root: str
    target: str
    bytes_before: int
    bytes_after: int
    merged: list[str] = field(default_factory=list)
    refused: str | None = None
    errors: list[Finding] = field(default_factory=list)
    kept: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "root": self.root,
            "target": self.target,
            "bytes_before": self.bytes_before,
            "bytes_after": self.bytes_after,
            "merged": self.merged,
            "refused": self.refused,
            "errors": [f.to_dict() for f in self.errors],
            "kept": self.kept,
        }


# ------------------------------------------------------------------------ opening
def _abspath(root: str | os.PathLike) -> str:
    return os.path.abspath(os.fspath(root))


def _precheck(path: str) -> None:
    """Refuse what cannot be a root before any lock file is created next to it."""
    if os.path.isdir(path):
        raise NotAStoreError(
            f"'{path}' is a directory; a bsb-store root is one HDF5 file.", path=path
        )
    if not os.path.exists(path):
        raise StoreNotFoundError(f"No store at '{path}'.", path=path)
    if not layout.is_hdf5(path):
        raise NotAStoreError(
            f"'{path}' is not a bsb-store file: not an HDF5 file (empty, foreign or "
            "damaged).",
            path=path,
        )


def _open_root(path: str, mode: str) -> h5py.File:
    """The root opened in ``mode``, after checking it is a store this version reads.

    Read-only, a root with a dead writer's undo log is seen as the rollback will
    leave it (:class:`~bsb_store.core.writes.undo.RollbackView`), without changing
    it; writable opens go through :func:`_writable_root`."""
    try:
        if mode == "r" and has_undo(path):
            f, _view = open_view(path)  # the view closes with its last reference
        else:
            f = _open(path, mode)
    except OSError as e:
        raise NotAStoreError(
            f"'{path}' is not a bsb-store file: it cannot be opened as HDF5, it is "
            f"truncated or damaged ({e}).",
            path=path,
        ) from e
    except NotAStoreError as e:
        raise NotAStoreError(
            f"'{path}' is not a bsb-store file: it cannot be opened as HDF5, it is "
            f"truncated or damaged ({e.__cause__ or e}).",
            path=path,
        ) from e
    try:
        try:
            fmt = f.attrs.get("bsb_store_format")
        except DAMAGE_ERRORS as e:
            raise NotAStoreError(
                f"'{path}' is not a bsb-store file: its root attributes cannot be read, "
                f"it is damaged ({e}).",
                path=path,
            ) from e
        if fmt != layout.FORMAT_NAME:
            raise NotAStoreError(
                f"'{path}' is not a bsb-store file: an HDF5 file without the "
                f"bsb_store_format='{layout.FORMAT_NAME}' attribute.",
                path=path,
            )
        version = _int_attr(f, "format_version")
        if version is not None and version > layout.FORMAT_VERSION:
            raise FormatVersionError(
                f"'{path}' uses bsb-store format version {version}; this bsb-store "
                f"reads up to version {layout.FORMAT_VERSION}. Upgrade bsb-store.",
                path=path,
                version=version,
            )
    except BaseException:
        f.close()
        raise
    return f


@contextlib.contextmanager
def _writable_root(path: str, st: _RootState) -> Iterator[tuple[h5py.File, list[str]]]:
    """The root opened for one crash-atomic write session (exclusive lock held).

    A dead writer's unfinished session is rolled back first (said in the yielded
    action list); the session is kept when the body returns and undone when it
    raises, like the engine's own writes."""
    actions: list[str] = []
    if rollback(path):
        st.lock.bump_generation()
        actions.append("rolled back the unfinished write session of a dead writer")
    f = _open_root(path, "r")  # validates format and version first
    f.close()
    st.lock.bump_generation()
    f, session = _open_session(path)
    try:
        try:
            yield f, actions
        finally:
            f.close()
    except BaseException:
        session.abort()
        raise
    session.commit()


def _int_attr(obj: h5py.HLObject, name: str) -> int | None:
    try:
        return int(obj.attrs[name])
    except (KeyError, TypeError, ValueError):
        return None


@contextlib.contextmanager
def _session(
    root: str | os.PathLike, locking: str | None, exclusive: bool
) -> Iterator[tuple[str, _RootState, HDF5Engine]]:
    """Hold the root lock (shared or exclusive) of a path that may be a store.

    The process's cached read handle is closed first (an ``r+`` open would clash with
    it). If the file turns out not to be a store, a lock file we created is removed.
    """
    path = _abspath(root)
    _precheck(path)
    lock_file = layout.lock_path(path)
    created = not os.path.exists(lock_file)
    engine = HDF5Engine(path, locking=locking)
    st = engine._st
    try:
        with st.rlock:
            hold = st.lock.exclusive() if exclusive else st.lock.shared()
            with hold:
                st.close_handle()
                yield path, st, engine
    except (NotAStoreError, FormatVersionError):
        if created:
            st.lock.close()
            with contextlib.suppress(OSError):
                os.unlink(lock_file)
        raise


# -------------------------------------------------------------------------- shards
@dataclass
class _ShardState:
    """What a shard holds, read under its own shared lock (None fields: unreadable)."""

    path: str
    name: str
    alive: bool
    hint: int
    committed: int | None = None
    log_rows: int | None = None
    pending_calls: int = 0
    pending_records: int = 0
    #: Why the shard must not be merged nor removed: a newer shard format, a foreign
    #: file, or committed rows that do not decode (None for a usable shard).
    unusable: str | None = None
    #: A committed record that fails its checksum (torn or zeroed data): the merge
    #: refuses the shard (None when every unmerged record matches).
    corrupt: str | None = None


def _read_shard(path: str, start: int, own: Any, locking: str) -> _ShardState:
    """What one shard holds past ``start`` (the log rows the root merged already).

    The commit record is the count the writer mirrors into the shard's lock file (a
    closed shard also keeps a copy in its ``committed`` dataset); it is read under the
    shard's shared lock, like the engine's consolidator does, and never exceeds the
    log rows actually in the file."""
    name = os.path.basename(path)[: -len(".h5")]
    if own is not None and not own.closed and own.name == name:
        log = own._file["log"]
        state = _ShardState(path, name, True, own.committed)
        return _shard_numbers(state, log, own.committed, start)
    lock_file = shard_paths(path)[0]
    state = _ShardState(path, name, writer_alive(path), read_commit_hint(lock_file))
    lock = SidecarLock(lock_file, locking)  # type: ignore[arg-type]
    try:
        with lock.shared():
            state.hint = max(state.hint, read_commit_hint(lock_file))
            with h5py.File(path, "r", locking=False) as sf:
                if not check_shard_format(sf):
                    return state  # torn at its first flush: unreadable
                committed = max(state.hint, int(sf["committed"][0]))
                _shard_numbers(state, sf["log"], committed, start)
                _check_streams(sf, state, start)
                # Decode the unmerged records as a merge would: their checksums.
                try:
                    read_calls(sf, start, state.committed)
                except ShardChecksumError as e:
                    state.corrupt = str(e)
                return state
    except FormatError as e:  # FormatVersionError included
        state.unusable = str(e)
        return state
    except (OSError, KeyError, ValueError, IndexError):
        return state
    finally:
        lock.close()


def _check_streams(sf: h5py.File, state: _ShardState, start: int) -> None:
    """Decode the stream names the unmerged committed log rows use (cheap: no data
    rows are read), so that ``check`` reports a shard whose merge would fail.

    :raises FormatError: a stream name is missing or not a JSON list.
    """
    committed = state.committed or 0
    if committed <= start:
        return
    sids = sf["log"][start:committed, 1]
    names = sf["streams"]
    try:
        if int(sids.min()) < 0 or int(sids.max()) >= names.shape[0]:
            raise IndexError(
                f"log rows name streams {int(sids.min())}..{int(sids.max())}, the "
                f"shard has {names.shape[0]}"
            )
        for raw in names[: int(sids.max()) + 1]:
            text = raw.decode() if isinstance(raw, bytes) else raw
            if not isinstance(json.loads(text), list):
                raise ValueError(f"stream name {text!r:.60} is not a JSON list")
    except (ValueError, TypeError, IndexError, UnicodeDecodeError) as e:
        raise FormatError(
            f"Shard '{state.path}': its committed log rows from {start} on cannot be "
            f"decoded ({type(e).__name__}: {e}).",
            path=state.path,
        ) from e


def _shard_numbers(
    state: _ShardState, log: h5py.Dataset, committed: int, start: int
) -> _ShardState:
    state.log_rows = int(log.shape[0])
    committed = min(committed, state.log_rows)
    state.committed = committed
    if committed > start:
        seqs = log[start:committed, 0]
        state.pending_calls = len(np.unique(seqs))
        state.pending_records = committed - start
    return state


def _applied(f: h5py.File) -> dict[str, int]:
    names = f["store/shards/name"].asstr()[()]
    return {str(n): int(a) for n, a in zip(names, f["store/shards/applied"][()])}


def _shards(f: h5py.File, path: str, st: _RootState) -> list[_ShardState]:
    applied = _applied(f)
    return [
        _read_shard(p, applied.get(os.path.basename(p)[:-3], 0), st.writer, st.locking)
        for p in list_shards(layout.shard_dir(path))
    ]


def _orphan_sidecars(path: str) -> list[str]:
    """Shard lock/alive files without their shard whose writer is gone."""
    sdir = layout.shard_dir(path)
    try:
        names = os.listdir(sdir)
    except FileNotFoundError:
        return []
    out = []
    for n in sorted(names):
        base, ext = os.path.splitext(n)
        if ext in (".lock", ".alive") and base + ".h5" not in names:
            p = os.path.join(sdir, n)
            if not writer_alive(os.path.join(sdir, base + ".h5")):
                out.append(p)
    return out


def _compact_temps(path: str) -> list[str]:
    """Files a killed ``compact`` or ``create`` left beside the root."""
    stem = glob.escape(path)
    return sorted(glob.glob(stem + ".compact-*.tmp") + glob.glob(stem + ".create-*.tmp"))


# --------------------------------------------------------------------------- check
def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"  # pragma: no cover


def _sample(items: list[Any]) -> str:
    text = ", ".join(str(x) for x in items[:_SAMPLES])
    return text + (
        f" (and {len(items) - _SAMPLES} more)" if len(items) > _SAMPLES else ""
    )
