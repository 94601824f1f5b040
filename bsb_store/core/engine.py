"""HDF5Engine: the root file's lifecycle, its locks, its handles and its communicator.

One engine object stands for one root path; any number of them may exist for the same
root in a process (BSB makes many), and they share one :class:`_RootState`: the
inter-process lock, the cached read handle, and the process's shard writer. So a
process keeps one shard per root however many engine objects it builds.

Reads (:meth:`HDF5Engine._read`) first merge committed shard data that the root does
not hold yet, then read under the shared lock through a cached read-only handle that is
reopened whenever another process published a transaction (the lock file's generation
changed). Mutations (:meth:`HDF5Engine._write`) take the exclusive lock, open the root
for writing, merge pending shard data, and publish through a journaled
:class:`~bsb_store.core.writes.txn.Transaction`; the writable handle is closed before
the lock is released, because HDF5 truncates a file to its own idea of the file size
when a writable handle closes. Appends (:meth:`HDF5Engine._append`) go to the process's
shard and take no lock that another process could hold.

Collective operations (construction, create, move, copy, remove, clears) decide on rank
0 and broadcast the outcome, an exception included, through :func:`comm.collective`.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import json
import os
import shutil
import sys
import threading
import uuid
import warnings
import weakref
from collections.abc import Iterator
from typing import Any

import h5py
import numpy as np

from .. import __version__
from ..exceptions import (
    ChunkSizeError,
    DiskFullError,
    LockTimeoutError,
    MissingShardsWarning,
    NotAStoreError,
    ReadOnlyError,
    RecoveryNeededError,
    StoreError,
    StoreExistsError,
    StoreIOError,
    StoreNotFoundError,
)
from . import layout
from .chunks import parse_size
from .comm import collective, make_comm
from .locking import READ_ONLY_ERRNOS, LockingMode, SidecarLock, parse_locking
from .writes import consolidate as merge
from .writes.shard import Record, ShardWriter
from .writes.txn import Transaction, has_journal, recover
from .writes.undo import UndoFile, has_undo, rollback, session_error, undo_path

_STATES: dict[tuple[str, LockingMode], _RootState] = {}
_STATES_LOCK = threading.Lock()


class _RootState:
    """Per-process state of one root path, shared by every engine on that path."""

    def __init__(self, path: str, locking: LockingMode):
        self.path = path
        self.locking = locking
        self.rlock = threading.RLock()
        self.lock = SidecarLock(layout.lock_path(path), locking)
        self.handle: h5py.File | None = None
        self.handle_gen = -1
        self.writer: ShardWriter | None = None
        self.applied: dict[str, int] | None = None  # merged counts at handle_gen
        self.chunk_size: tuple[float, float, float] | None = None
        self.pending_chunk_size: tuple[float, float, float] | None = None
        self.scopes = threading.local()  # per-thread read-scope state
        self.merged_own = 0  # own writer's committed rows at the last merge check
        self.sidecars_checked = False  # registered shards looked for (first open)
        self.columns: dict[str, dict[str, Any]] = {}  # set path -> column specs
        self.read_cache: dict[Any, Any] = {}

    # --------------------------------------------------------------------- handles
    def cached(self, key: Any, build):
        """A value derived from the current read handle, rebuilt after it reopens
        (index tables are parsed once per generation, not once per call)."""
        value = self.read_cache.get(key)
        if value is None:
            value = self.read_cache[key] = build()
        return value

    def close_handle(self) -> None:
        self.read_cache = {}
        if self.handle is not None:
            with contextlib.suppress(Exception):
                self.handle.close()
            self.handle = None
            self.handle_gen = -1
            self.applied = None

    def read_handle(self) -> h5py.File:
        """A read-only handle valid for the current generation (lock must be held)."""
        gen = self.lock.read_generation()
        if self.handle is None or gen != self.handle_gen:
            self.close_handle()
            self.read_cache = {}
            if not os.path.exists(self.path):
                raise StoreNotFoundError(f"No store at '{self.path}'.", path=self.path)
            if has_undo(self.path):
                raise RecoveryNeededError(
                    f"'{self.path}' holds an unfinished write session (its writer "
                    "died); it is rolled back under the exclusive lock.",
                    path=self.path,
                )
            self.handle = _open(self.path, "r")
            try:
                layout.validate(self.handle, self.path)
            except Exception:
                self.close_handle()
                raise
            if has_journal(self.handle):
                self.close_handle()
                raise RecoveryNeededError(
                    f"'{self.path}' holds an interrupted transaction; open it writable "
                    f"or run `bsb-store repair {self.path}`.",
                    path=self.path,
                )
            self.handle_gen = gen
            self.chunk_size = parse_size(self.handle["store/chunk_size"][()])
            if not self.sidecars_checked:
                self.sidecars_checked = True
                _warn_missing_shards(self.path, self.handle)
        return self.handle

    def check_root(self) -> None:
        """Refuse a root that is not a store before the first lock of this process
        creates the lock file: no sidecar is ever left next to a foreign file. Free
        once the lock file is open (every call after the first)."""
        if self.lock.opened or os.path.exists(layout.lock_path(self.path)):
            return
        if not os.path.exists(self.path):
            raise StoreNotFoundError(f"No store at '{self.path}'.", path=self.path)
        if not layout.is_hdf5(self.path):
            raise NotAStoreError(
                f"'{self.path}' is not an HDF5 file (empty, foreign or damaged).",
                path=self.path,
            )
        if has_undo(self.path):
            return  # possibly torn until the dead writer's session is rolled back
        try:
            with h5py.File(self.path, "r", locking=False) as f:
                ours = f.attrs.get("bsb_store_format") == layout.FORMAT_NAME
        except OSError as e:
            raise NotAStoreError(
                f"'{self.path}' cannot be opened as an HDF5 file ({e}): it is "
                "truncated, damaged or not HDF5.",
                path=self.path,
            ) from e
        if not ours:
            raise NotAStoreError(
                f"'{self.path}' is an HDF5 file but not a bsb-store root (no "
                f"bsb_store_format='{layout.FORMAT_NAME}' attribute).",
                path=self.path,
            )

    def applied_counts(self, f: h5py.File) -> dict[str, int]:
        if self.applied is None:
            names = f["store/shards/name"].asstr()[()]
            self.applied = dict(zip(names, (int(a) for a in f["store/shards/applied"])))
        return self.applied

    def get_writer(self) -> ShardWriter:
        # A writer whose write failed (a full disk, an I/O error) closed itself; its
        # shard is a dead writer's, merged as such, and appends go to a new shard.
        if self.writer is None or self.writer.closed:
            self.lock.require_writable()  # a read-only place: refuse before any I/O
            shards = layout.shard_dir(self.path)
            same_store = self._same_store_check()
            try:
                writer = ShardWriter(shards, self.locking, root=self.path)
            except OSError as e:
                if e.errno in (errno.ENOSPC, errno.EDQUOT) and not isinstance(
                    e, StoreError
                ):
                    raise DiskFullError(
                        f"Cannot append to '{self.path}': no room to start a shard "
                        f"in '{shards}' ({e.strerror or e}). Nothing was written.",
                        path=self.path,
                    ) from None
                if isinstance(e, StoreError) or e.errno not in READ_ONLY_ERRNOS:
                    raise
                raise ReadOnlyError(
                    f"Cannot append to the store '{self.path}': its shard directory "
                    f"'{shards}' cannot be written ({e.strerror}). Reads work; copy "
                    "the store somewhere writable to change it.",
                    path=self.path,
                ) from e
            writer.same_store = same_store
            self.writer = writer
        return self.writer

    def _same_store_check(self):
        """A function telling whether the file at the root is still this store (its
        ``storage_id``), for a writer that finds the root's inode changed."""
        self.check_root()

        def storage_id() -> Any:
            # The file at the path now, not the cached handle (which may be older).
            with (
                self.rlock,
                self.lock.shared(),
                h5py.File(self.path, "r", locking=False) as f,
            ):
                return f.attrs.get("storage_id")

        try:
            known = storage_id()
        except (OSError, StoreError):  # a dead writer's torn session: cannot tell
            known = None

        def same() -> bool:
            try:
                return known is None or storage_id() == known
            except (OSError, StoreError):
                return False

        return same

    def drop_writer(self) -> None:
        """Forget the shard writer without merging (its root is being replaced)."""
        if self.writer is not None:
            self.writer.close(delete=True)
            self.writer = None

    def reset(self) -> None:
        self.close_handle()
        self.drop_writer()
        # Reopen the lock file by path on next use: another rank (or process) may have
        # removed the root and its lock file, and a lock held on the old inode would
        # exclude nobody and never see a generation bump.
        self.lock.close()
        self.chunk_size = None
        self.pending_chunk_size = None
        self.columns = {}
        self.sidecars_checked = False


def _is_store_file(path: str) -> bool:
    """Whether ``path`` is an HDF5 file stamped as a bsb-store root."""
    if not layout.is_hdf5(path):
        return False
    try:
        with h5py.File(path, "r", locking=False) as f:
            return f.attrs.get("bsb_store_format") == layout.FORMAT_NAME
    except OSError:
        return False


def _warn_missing_shards(root: str, f: h5py.File) -> None:
    """Warn (once per process and root) when writers registered in the root have no
    shard next to it: the root was copied or moved without its sidecars."""
    try:
        missing = merge.missing_shards(f, layout.shard_dir(root))
    except Exception:  # a damaged table is check's business
        return
    if missing:
        warnings.warn(
            merge.missing_text(root, missing) + ".", MissingShardsWarning, stacklevel=4
        )


def _open(path: str, mode: str) -> h5py.File:
    if os.path.exists(path) and not layout.is_hdf5(path):
        # Checked first: HDF5 may initialise a zero-byte file opened for writing.
        raise NotAStoreError(
            f"'{path}' is not an HDF5 file (empty, foreign or damaged).", path=path
        )
    try:
        return h5py.File(path, mode, locking=False)
    except OSError as e:
        if not os.path.exists(path):
            raise StoreNotFoundError(f"No store at '{path}'.", path=path) from e
        raise NotAStoreError(
            f"'{path}' cannot be opened as an HDF5 file ({e}): it is truncated, "
            "damaged or not HDF5.",
            path=path,
        ) from e


def _open_session(path: str) -> tuple[h5py.File, UndoFile]:
    """The root opened for a crash-atomic write session (exclusive lock held): HDF5
    writes through an :class:`~bsb_store.core.writes.undo.UndoFile`."""
    if not os.path.exists(path):
        raise StoreNotFoundError(f"No store at '{path}'.", path=path)
    if not layout.is_hdf5(path):
        raise NotAStoreError(
            f"'{path}' is not an HDF5 file (empty, foreign or damaged).", path=path
        )
    try:
        session = UndoFile(path)
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):  # the undo log cannot be started
            raise session_error(path, "starting a write session", e) from e
        raise
    try:
        # Room for the session's metadata and undo log; the data it writes is checked
        # as it is staged (Transaction.reserve).
        session.reserve(0, 0, "a write session")
        return h5py.File(session, "r+", locking=False), session
    except OSError as e:
        session.abort()
        if isinstance(e, StoreError):
            raise
        if session.error is not None:
            raise session_error(path, "opening the root for writing", e) from e
        raise NotAStoreError(
            f"'{path}' cannot be opened as an HDF5 file ({e}): it is truncated, "
            "damaged or not HDF5.",
            path=path,
        ) from e
    except BaseException:
        session.abort()
        raise


def _close_session_file(f: h5py.File) -> None:
    """Close the root of a write session (before the session ends). If HDF5 fails to,
    close it again: a file left half-open is closed when collected, through a
    session that has ended."""
    try:
        f.close()
    except BaseException:
        with contextlib.suppress(Exception):
            f.close()
        raise


def _raise_io_error(root: str, session: UndoFile, error: BaseException, undone: bool):
    """Raise the :class:`StoreIOError` for an error of a write session that the
    operating system or HDF5 raised (the session is undone already, or ``undone`` is
    False); return for any other error (a StoreError of the caller, an interrupt),
    which is raised as is."""
    if isinstance(error, StoreError) or not isinstance(error, (OSError, RuntimeError)):
        return
    if session.error is None and not isinstance(error, OSError) and not _from_h5py(error):
        return  # a RuntimeError of Python code (a bug, a test's fault), not of HDF5
    if session.error is not None:  # the first write that failed, and when
        cause, step = session.error, session.failed_operation
    else:
        cause, step = error, session.operation
    exc = session_error(root, f"{step}, in {_api_caller()}", cause, undone)
    raise exc from error


def _from_h5py(error: BaseException) -> bool:
    """Whether ``error`` was raised inside h5py (HDF5's errors reach Python there)."""
    tb = error.__traceback__
    last = None
    while tb is not None:
        last, tb = tb, tb.tb_next
    return last is not None and "h5py" in last.tb_frame.f_code.co_filename


def _api_caller() -> str:
    """The function outside the engine that started the current write session."""
    frame = sys._getframe(1)
    while frame is not None:
        code = frame.f_code
        if code.co_filename not in (__file__, contextlib.__file__):
            return getattr(code, "co_qualname", code.co_name)
        frame = frame.f_back
    return "?"


def _state(path: str, locking: LockingMode) -> _RootState:
    """The process's state of ``path`` for engines of ``locking`` mode (an engine
    asking for ``locking="none"`` never shares a state whose lock is a flock)."""
    with _STATES_LOCK:
        st = _STATES.get((path, locking))
        if st is None:
            st = _STATES[(path, locking)] = _RootState(path, locking)
        return st


class HDF5Engine:
    """A store rooted at one HDF5 file.

    :param root: path of the root ``.h5`` file (never a directory).
    :param comm: ``None`` for serial use, an mpi4py communicator, or bsb's MPIService.
    :param locking: ``"flock"`` (default) or ``"none"`` for file systems without locks
        (then only one process may use the store). Defaults to ``BSB_STORE_LOCKING``.
    """

    def __init__(
        self, root: str | os.PathLike, comm: Any = None, *, locking: str | None = None
    ):
        self._comm = make_comm(comm)
        path = self._comm.bcast(
            os.path.abspath(os.fspath(root)) if self._comm.rank == 0 else None
        )
        self._locking = parse_locking(locking)
        self._set_root(path)
        self._readonly = False
        self._files = None
        self._morphologies = None

    def _set_root(self, path: str) -> None:
        if os.path.isdir(path):
            raise NotAStoreError(
                f"'{path}' is a directory; a bsb-store root is one HDF5 file.", path=path
            )
        self._root = path
        self._st = _state(path, self._locking)

    # ------------------------------------------------------------------ properties
    @property
    def root(self) -> str:
        return self._root

    @property
    def comm(self):
        return self._comm

    @property
    def root_slug(self) -> str:
        return os.path.relpath(self._root)

    @property
    def locking(self) -> LockingMode:
        return self._locking

    def __eq__(self, other: object) -> bool:
        return isinstance(other, HDF5Engine) and other._root == self._root

    def __hash__(self) -> int:
        return hash(self._root)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._root!r}>"

    @property
    def files(self):
        """The store's :class:`~bsb_store.core.resources.files.FileStore`."""
        if self._files is None:
            from .resources.files import FileStore

            self._files = FileStore(self)
        return self._files

    @property
    def morphologies(self):
        """The store's :class:`~bsb_store.core.resources.morphologies.MorphologyRepository`."""
        if self._morphologies is None:
            from .resources.morphologies import MorphologyRepository

            self._morphologies = MorphologyRepository(self)
        return self._morphologies

    # ------------------------------------------------------------------- lifecycle
    @staticmethod
    def recognizes(root: Any, comm: Any = None) -> bool:
        """Whether ``root`` is a bsb-store root (decided on rank 0, broadcast)."""
        c = make_comm(comm)
        return collective(c, lambda: _is_store_file(os.fspath(root)))

    @classmethod
    def peek_exists(cls, root: Any) -> bool:
        return os.path.exists(os.fspath(root))

    def exists(self) -> bool:
        """Whether a file exists at the root, of any kind (never cached): a text file or
        another program's HDF5 file count. :meth:`is_store` tells whether it is a
        bsb-store root."""
        return os.path.isfile(self._root)

    def is_store(self) -> bool:
        """Whether the root is a bsb-store root (:meth:`recognizes` on this engine's
        root and communicator; decided on rank 0, broadcast). Collective."""
        return self.recognizes(self._root, self._comm)

    def create(self, mode: str = "w", *, force: bool = False) -> None:
        """Create an empty store at the root. Collective.

        :param mode: as in :class:`h5py.File`: ``"w"`` (the default, and what BSB's
          ``Storage.create`` and ``renew`` call) creates the store, replacing an earlier
          bsb-store root at the path (its data is lost); ``"x"`` (or ``"w-"``) refuses
          with :class:`~bsb_store.exceptions.StoreExistsError` when any file exists there.
        :param force: replace a file that is *not* a bsb-store root too (a text file, a
          bsb-hdf5 network, a damaged root that no longer opens). Without it such a
          file is never touched: :class:`~bsb_store.exceptions.NotAStoreError`. An empty
          file holds nothing and is replaced without it.
        :raises StoreNotFoundError: the parent directory does not exist (it is not made,
          as with h5py and bsb-hdf5).
        """
        if mode not in ("w", "x", "w-"):
            raise ValueError(f"create(mode={mode!r}): the mode is 'w' or 'x' ('w-').")
        # Decided before the reset: a refused create loses nothing (pending appends
        # of this process included).
        collective(self._comm, lambda: self._refuse_to_replace(mode != "w", force))
        self._collective_reset(self._create)

    def _refuse_to_replace(self, exclusive: bool, force: bool) -> None:
        """Raise when :meth:`create` must not replace what is at the root (rank 0)."""
        path = self._root
        parent = os.path.dirname(path) or "."
        if not os.path.isdir(parent):
            raise StoreNotFoundError(
                f"Cannot create '{path}': the directory '{parent}' does not exist.",
                path=path,
            )
        if os.path.isdir(path):
            raise NotAStoreError(
                f"Cannot create '{path}': it is a directory; a root is one HDF5 file.",
                path=path,
            )
        if not os.path.lexists(path):
            return
        if exclusive:
            raise StoreExistsError(
                f"Cannot create '{path}': it exists (create(mode='x')).", path=path
            )
        if force or os.path.getsize(path) == 0 or _is_store_file(path):
            return
        what = "an HDF5 file of another kind" if layout.is_hdf5(path) else "not HDF5"
        raise NotAStoreError(
            f"Cannot create '{path}': the file there is not a bsb-store root ({what}); "
            "it was left untouched. Remove it, or pass create(force=True) to replace it.",
            path=path,
        )

    def _create(self) -> None:
        st = self._st
        with st.rlock, st.lock.exclusive():
            shutil.rmtree(layout.shard_dir(self._root), ignore_errors=True)
            # Written aside and renamed into place: a kill leaves the old root or the
            # new one, whole (a dead session's log is undone first: it belongs to the
            # old root and must never be applied to the new one).
            rollback(self._root)
            tmp = f"{self._root}.create-{uuid.uuid4().hex}.tmp"
            try:
                with h5py.File(tmp, "w", locking=False) as f:
                    layout.initialise(f, self._provenance())
                os.replace(tmp, self._root)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
            st.lock.bump_generation()

    def remove(self) -> None:
        """Delete the root and its sidecars. Collective."""
        self._collective_reset(self._remove)

    def _remove(self) -> None:
        st = self._st
        with st.rlock:
            with st.lock.exclusive():
                shutil.rmtree(layout.shard_dir(self._root), ignore_errors=True)
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(undo_path(self._root))
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self._root)
                st.lock.bump_generation()
            st.lock.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(layout.lock_path(self._root))

    def move(self, new_root: str | os.PathLike) -> None:
        """Move the store (root and sidecars) to ``new_root``. Collective."""
        self.flush()
        new = os.path.abspath(os.fspath(new_root))

        def run():
            if os.path.exists(new) and new != self._root:
                raise StoreExistsError(f"Cannot move to '{new}': it exists.", path=new)
            # Merge, and forget the registered shards: the move deletes them all.
            with self._write() as txn:
                merge.unregister_all(txn)
            st = self._st
            with st.rlock, st.lock.exclusive():
                os.makedirs(os.path.dirname(new) or ".", exist_ok=True)
                os.replace(self._root, new)
                shutil.rmtree(layout.shard_dir(self._root), ignore_errors=True)
                st.lock.bump_generation()
            return new

        self._comm.barrier()
        old = self._root
        new = collective(self._comm, run)
        self._st.reset()
        if self._comm.rank == 0 and new != old:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(layout.lock_path(old))  # the sidecar does not outlive its root
        self._comm.barrier()
        self._set_root(new)

    def copy(self, new_root: str | os.PathLike) -> None:
        """Copy the store to ``new_root`` (pending shard data merged first). Collective."""
        self.flush()
        new = os.path.abspath(os.fspath(new_root))

        def run():
            if os.path.exists(new):
                raise StoreExistsError(f"Cannot copy to '{new}': it exists.", path=new)
            self._merge_all()
            with self._st.rlock, self._st.lock.shared():
                os.makedirs(os.path.dirname(new) or ".", exist_ok=True)
                shutil.copyfile(self._root, new)
            # Merged: the copy holds every call, and no shard belongs to it.
            merge.forget_registered(new)

        self._comm.barrier()
        collective(self._comm, run)

    def _collective_reset(self, fn) -> None:
        """Run a root-replacing operation on rank 0 after every rank dropped its state."""
        self._st.reset()
        self._comm.barrier()
        collective(self._comm, fn)
        self._st.reset()

    def _provenance(self) -> dict[str, Any]:
        """The provenance bundle stamped at create (the BSB plugin extends it)."""
        import getpass
        import platform
        import socket

        return {
            "storage_id": None,
            "state_id": 0,
            "created_at": layout.now_iso(),
            "engine_name": "bsb-store",
            "engine_version": __version__,
            "host": {
                "platform": platform.platform(),
                "python_version": platform.python_version(),
                "hostname": socket.gethostname(),
                "user": _safe(getpass.getuser),
                "cwd": os.getcwd(),
            },
            "mpi_size": self._comm.size,
        }

    def close(self) -> None:
        """Merge this process's shard into the root and release handles (idempotent).

        Not collective: every process closes its own writer. The shard is closed
        first and merged like a dead writer's: it is deleted only by the merge that
        put its data in the root.

        :raises StoreError: the shard could not be merged (the root lock timed out,
            the disk is full, ...): of the class of the cause (a
            :class:`StoreIOError` for an error of the operating system). The shard
            is kept, with every call that returned; the next process that opens the
            store merges it, or ``bsb-store repair``.
        """
        st = self._st
        with st.rlock:
            writer = st.writer
            try:
                if writer is not None and writer.closed and writer.failed is not None:
                    # A write to it failed and it closed itself: its committed calls
                    # are merged like a dead writer's, here, as close() promises.
                    st.writer = None
                    if writer.calls and os.path.exists(writer.path) and self.exists():
                        try:
                            self._merge_all()
                        except Exception as e:
                            _raise_unmerged(self._root, writer, e)
                elif writer is not None and not writer.closed:
                    writer.commit_pending()  # raises with the writer still open
                    if writer.orphan_mergeable():
                        # Its file was deleted behind its back: only the open handle
                        # still holds the calls; merge from it before closing it, and
                        # unregister the shard (nothing will retire it).
                        with self._write(bump_state=False) as txn:
                            merge.unregister(txn, {writer.name})
                    st.writer = None
                    unregistered = True
                    try:
                        writer.close()
                        if writer.committed and self.exists():
                            self._merge_all()
                        elif writer.registered and self.exists():
                            try:  # retires the empty shard, and unregisters it
                                self._merge_all()
                            except Exception:  # the next merge does (shard kept)
                                unregistered = False
                    except BaseException as e:
                        if os.path.exists(writer.path):
                            _raise_unmerged(self._root, writer, e)
                        raise
                    # Merged and retired by the merge; a root removed behind our back
                    # has nothing to merge into (the shard is deleted as before).
                    if unregistered and (not writer.committed or not self.exists()):
                        merge.remove_retired([writer.path])
                    with contextlib.suppress(OSError):  # the folder goes with its
                        os.rmdir(os.path.dirname(writer.path))  # last shard
            finally:
                st.close_handle()
                st.lock.close()  # reopened by path on next use: no descriptor per root

    def flush(self) -> None:
        """Commit this process's deferred appends to its shard."""
        if self._st.writer is not None:
            self._st.writer.commit_pending()

    # ---------------------------------------------------------------- read / write
    def read_only(self) -> contextlib.AbstractContextManager:
        """Context manager: writes raise :class:`ReadOnlyError` inside it."""
        return _ReadOnly(self)

    def readwrite(self) -> None:
        self._readonly = False

    @contextlib.contextmanager
    def read_scope(self) -> Iterator[HDF5Engine]:
        """Batch reads: other processes' pending shard data is merged once, at scope
        entry; reads inside only merge this process's own new appends."""
        scopes = self._st.scopes
        self._sync()
        scopes.depth = getattr(scopes, "depth", 0) + 1
        try:
            yield self
        finally:
            scopes.depth -= 1

    @contextlib.contextmanager
    def write_scope(self) -> Iterator[HDF5Engine]:
        """Batch writes: appends inside are committed together when the scope exits."""
        self._check_writable()
        with self._writer().deferred():
            yield self

    def _check_writable(self) -> None:
        if self._readonly:
            raise ReadOnlyError(
                f"The store '{self._root}' is in read-only mode.", path=self._root
            )

    def _sync(self) -> None:
        """Merge committed shard data the root does not hold yet (readers see every
        append that returned before the read began)."""
        with self._read():
            pass

    def _own_committed(self) -> int | None:
        """This process's committed append count, after committing what is queued;
        None when no merge check is due (read-only, or inside a read scope with no
        new own appends since the scope's last merge)."""
        st = self._st
        if self._readonly:
            return None
        if st.writer is not None:
            st.writer.commit_pending()
        own = st.writer.committed if st.writer is not None else 0
        if getattr(st.scopes, "depth", 0) and own == st.merged_own:
            return None
        return own

    def _merge_all(self) -> None:
        with self._write(merge_only=True):
            pass

    @contextlib.contextmanager
    def _read(self) -> Iterator[h5py.File]:
        """An open root for reading, with every returned append merged in.

        One shared hold serves the common case: the read handle is validated and the
        shards are checked for unmerged committed calls under it, and the caller
        reads under the same hold. Only when something must change first (pending
        calls to merge, a dead writer's session to roll back, a 0.1 journal to redo)
        is the hold released, the change made under the exclusive lock, and the
        read retried."""
        st = self._st
        st.check_root()
        own = self._own_committed()
        for attempt in range(3):
            with st.rlock:
                todo = None
                with st.lock.shared():
                    try:
                        handle = st.read_handle()
                    except RecoveryNeededError:
                        if self._readonly and not has_undo(self._root):
                            raise
                        if attempt == 2:
                            raise
                        todo = "recover"
                    else:
                        if own is not None and attempt < 2:
                            applied = st.applied_counts(handle)
                            shard_dir = layout.shard_dir(self._root)
                            if merge.pending(None, shard_dir, st.writer, applied):
                                todo = "merge"
                        if todo is None:
                            if own is not None:
                                st.merged_own = own
                            yield handle
                            return
                if todo == "recover" and self._readonly:
                    self._roll_back()
                else:  # a merge also rolls back a dead session and redoes a journal
                    self._merge_all()
                    if own is not None:
                        st.merged_own = own
        raise RecoveryNeededError(  # pragma: no cover - a merge always clears both
            f"'{self._root}' could not be brought to a readable state.", path=self._root
        )

    @contextlib.contextmanager
    def _write(
        self, merge_only: bool = False, bump_state: bool = True
    ) -> Iterator[Transaction]:
        """A transaction on the root opened for writing, under the exclusive lock.

        The whole session (recovery, merge, the caller's transaction) is one
        :class:`~bsb_store.core.writes.undo.UndoFile` session: it is kept when the
        HDF5 file closed cleanly, and undone byte for byte when anything raised, so a
        call that raises leaves the root exactly as it was, and a killed one is rolled
        back by the next process that takes the lock."""
        if not merge_only:
            self._check_writable()
        st = self._st
        st.check_root()
        if st.writer is not None:
            st.writer.commit_pending()
        with st.rlock, st.lock.exclusive():
            st.close_handle()
            if rollback(self._root):
                st.lock.bump_generation()
            # Readers holding a handle from before notice the session by the new
            # generation, and a killed session by its undo log, never torn pages.
            st.lock.bump_generation()
            f, session = _open_session(self._root)
            retired: list[str] = []
            changed = False
            session.operation = "validating the root"
            try:
                try:
                    layout.validate(f, self._root)
                    session.operation = "recovering an interrupted transaction"
                    recover(f)
                    session.operation = "merging pending appends"
                    txn = Transaction(f, session.reserve)
                    retired = merge.consolidate(
                        txn, layout.shard_dir(self._root), st.writer, self._locking
                    )
                    if not txn.empty:
                        session.operation = "publishing the merge"
                        _bump_state(txn)
                        txn.commit()
                        changed = True
                    if not merge_only:
                        session.operation = "writing"
                        txn = Transaction(f, session.reserve)
                        yield txn
                        session.operation = "publishing the write"
                        if not txn.empty:
                            if bump_state:  # False: bookkeeping, not the store's data
                                _bump_state(txn)
                            changed = True
                        txn.commit()
                    else:
                        yield txn
                    session.operation = "closing (flushing) the root"
                finally:
                    _close_session_file(f)
            except BaseException as e:
                # A rollback that fails leaves the log for the next session.
                undone = session.try_abort()
                _raise_io_error(self._root, session, e, undone)
                raise
            if session.error is not None:  # a write failed (HDF5 never saw it)
                undone = session.try_abort()
                _raise_io_error(self._root, session, session.error, undone)
            session.commit()
            if changed:
                st.lock.bump_generation()
            merge.remove_retired(retired)

    def _roll_back(self) -> None:
        """Undo a dead writer's unfinished session (any engine may: the result is the
        root as it was before that session, which is what every reader must see)."""
        st = self._st
        with st.rlock, st.lock.exclusive():
            st.close_handle()
            if rollback(self._root):
                st.lock.bump_generation()

    def _append(self, records: list[Record]) -> None:
        """Commit one append call to this process's shard (no root lock)."""
        self._check_writable()
        self._writer().append(records)

    def _writer(self) -> ShardWriter:
        """This process's shard writer, registered in the root.

        A new shard is registered in the root (one write session, once per shard,
        before its first call returns), so that the root knows which writers may hold
        data it lacks: a copy of the root without its sidecars says so (``check``,
        ``info``, opening it). Not with ``locking="none"``, where a write session of
        one rank could meet another's."""
        writer = self._st.get_writer()
        if not writer.registered:
            if self._locking != "none":
                with self._write(bump_state=False) as txn:
                    merge.register(txn, writer.name)
            writer.registered = True
        return writer

    # -------------------------------------------------------------- chunk size
    def _chunk_size(self, sync: bool = True) -> tuple[float, float, float] | None:
        """The store's chunk size. ``sync=False`` (the append path) skips merging
        pending appends and only reads the root while the size is still unknown."""
        st = self._st
        if sync:
            with self._read():
                pass
        elif st.chunk_size is None:
            st.check_root()
            with st.rlock, st.lock.shared():
                st.read_handle()
        return st.chunk_size

    def _check_chunk_size(self, size: tuple[float, float, float] | None) -> list[Record]:
        """Validate a chunk's size against the store's; the record that sets it."""
        if size is None:
            return []
        st = self._st
        # Known sizes first: until the first merge the root holds none, and asking it
        # would take the shared root lock on every append.
        current = st.chunk_size or st.pending_chunk_size or self._chunk_size(sync=False)
        if current is not None:
            if not np.allclose(current, size):
                raise ChunkSizeError(
                    f"Chunk size mismatch: the store '{self._root}' uses chunks of "
                    f"{current}, got a chunk of size {size}.",
                    expected=current,
                    given=size,
                )
            return []
        st.pending_chunk_size = size
        return [Record(("S", "", "chunk_size"), 0, 0, np.asarray([size], float), 1)]

    def _known_columns(
        self, path: str, refresh: bool = False
    ) -> dict[str, dict[str, Any]]:
        """The column specs of a chunked set as this process knows them: read from the
        root on first use (or ``refresh``), plus the columns this process's own appends
        introduced. Never waits: when another process holds the root exclusively, the
        specs stay as known and the merge checks the rest (the append path takes no
        lock another process could make it wait on)."""
        st = self._st
        with st.rlock:
            known = st.columns.get(path)
            if known is None or refresh:
                st.check_root()
                known = st.columns.setdefault(path, {})
                try:
                    with st.lock.shared(timeout=0):
                        f = st.read_handle()
                        if path in f:
                            known.update(json.loads(f[path].attrs.get("columns", "{}")))
                except LockTimeoutError:
                    pass
            return known

    # ----------------------------------------------------------- store-level data
    @property
    def metadata(self) -> dict[str, Any]:
        """The provenance bundle with the current ``state_id``."""
        if not self.exists():
            return {}
        with self._read() as f:
            meta = json.loads(f["store"].attrs.get("provenance", "{}"))
            meta["state_id"] = int(f["store/state"][0])
            meta["storage_id"] = f.attrs.get("storage_id")
        return meta

    @property
    def storage_id(self) -> str | None:
        return self.metadata.get("storage_id")

    @property
    def state_id(self) -> int | None:
        return self.metadata.get("state_id")

    @property
    def versions(self) -> dict[str, str]:
        with self._read() as f:
            return {
                "engine": "bsb-store",
                "version": str(f.attrs.get("bsb_store_version", "")),
                "format": str(f.attrs.get("format_version", "")),
            }

    def clear_placement(self) -> None:
        """Remove every placement set's data and the chunk size. Collective."""
        self._collective_mutation(self._clear_group, "placement", reset_size=True)

    def clear_connectivity(self) -> None:
        """Remove every connectivity set. Collective."""
        self._collective_mutation(self._clear_group, "connectivity")

    def _clear_group(self, name: str, reset_size: bool = False) -> None:
        with self._write() as txn:
            for child in list(txn.file[name]):
                txn.delete(f"{name}/{child}")
            if reset_size:
                txn.write("store/chunk_size", 0, np.full(3, np.nan))
        if reset_size:
            self._st.chunk_size = None
            self._st.pending_chunk_size = None

    def _collective_mutation(self, fn, *args, **kwargs) -> Any:
        self.flush()
        self._comm.barrier()
        out = collective(self._comm, lambda: fn(*args, **kwargs))
        self._st.close_handle()
        return out

    def get_chunk_stats(self) -> dict[str, dict[str, Any]]:
        """``{str(chunk id): {"placed": n, "connections": {"inc": n, "out": n}}}`` summed
        over every set, in ascending chunk id order (identical on every rank)."""
        from .resources.connectivity import ConnectivitySet
        from .resources.placement import PlacementSet

        def compute():
            stats: dict[int, dict[str, Any]] = {}

            def entry(cid):
                return stats.setdefault(
                    cid, {"placed": 0, "connections": {"inc": 0, "out": 0}}
                )

            for name in PlacementSet.list(self):
                for cid, n in PlacementSet(self, name).get_chunk_stats().items():
                    entry(int(cid))["placed"] += n
            for tag in ConnectivitySet.get_tags(self):
                for cid, d in ConnectivitySet(self, tag).get_chunk_stats().items():
                    for k in ("inc", "out"):
                        entry(int(cid))["connections"][k] += d[k]
            return {str(k): stats[k] for k in sorted(stats)}

        return collective(self._comm, compute)


def _bump_state(txn: Transaction) -> None:
    state = int(txn.file["store/state"][0])
    txn.write("store/state", 0, np.asarray([state + 1], np.int64))


def _apply_store_values(txn: Transaction, _set: str, calls) -> None:
    """Applier for store-level records (the chunk size set by a first sized chunk)."""
    current = parse_size(txn.file["store/chunk_size"][()])
    for call in calls:
        for rec in call.records:
            if rec.stream[2] == "chunk_size" and current is None:
                current = parse_size(rec.rows[0])
                txn.write("store/chunk_size", 0, np.asarray(current, float))


merge.register_applier("S", _apply_store_values)


class _ReadOnly:
    """Read-only mode: reads skip the merge step (no writer is expected), so every
    append committed before entry is merged here, once."""

    def __init__(self, engine: HDF5Engine):
        self._engine = engine
        self._previous = engine._readonly
        engine.flush()
        if not engine._readonly and engine.exists():
            with engine._read():  # merges, and finishes an interrupted transaction
                pass
        engine._readonly = True

    def __enter__(self) -> HDF5Engine:
        self._engine._readonly = True
        return self._engine

    def __exit__(self, *exc) -> None:
        self._engine._readonly = self._previous


def _safe(fn) -> str | None:
    try:
        return fn()
    except Exception:
        return None


def _raise_unmerged(root: str, writer: ShardWriter, error: BaseException):
    """Raise the error of a close whose merge failed (of the class of ``error`` when
    it is a StoreError): what failed, where the data is kept and what merges it."""
    if not isinstance(error, Exception):
        return  # an interrupt is raised as is
    reason = error.msg if isinstance(error, StoreError) else None
    reason = str(reason or error).split("\n\n")[0]
    message = (
        f"The appends of this process could not be merged into '{root}' at close "
        f"({type(error).__name__}: {reason}). Nothing is lost: its {writer.calls} "
        f"append calls stay in the shard '{writer.path}', which the next process "
        f"that opens the store merges (any read does), or run "
        f"`bsb-store repair {root}`."
    )
    cls = type(error) if isinstance(error, StoreError) else StoreIOError
    try:
        exc = cls(message, path=root, shard=writer.path)
    except Exception:  # a class that wants other arguments
        exc = StoreIOError(message, path=root, shard=writer.path)
    raise exc from error


def _close_all() -> None:
    for st in list(_STATES.values()):
        try:
            if st.writer is not None and not st.writer.closed:
                HDF5Engine(st.path, locking=st.locking).close()
        except Exception as e:  # a shard that could not be merged stays for later
            with contextlib.suppress(Exception):
                print(f"bsb-store: at exit: {e}", file=sys.stderr, flush=True)
        with contextlib.suppress(Exception):
            st.close_handle()
        with contextlib.suppress(Exception):
            st.lock.close()


atexit.register(_close_all)
_ = weakref  # engines are cheap views; state lives in _STATES
