"""Inter-process locks on sidecar lock files (portalocker ``flock``).

We never lock the ``.h5`` file itself: HDF5 takes its own ``flock`` on it, and the engine
opens it with ``locking=False`` because *these* locks coordinate access. A
:class:`SidecarLock` wraps one open lock file and hands out shared and exclusive
holds with a timeout; holds nest within the owning process (an exclusive hold
satisfies shared requests). ``flock`` locks are released by the kernel when their
process dies, even by SIGKILL, so a killed writer never leaves a stale lock.

The lock file also carries a *generation* counter (8 bytes at offset 0): every
transaction that changes the root file bumps it while holding the exclusive lock, and a
reader that holds the shared lock compares it with the generation its cached HDF5 handle
was opened at. That is how a process learns, with one ``pread``, that another process
changed the file and its handle's metadata cache is stale.

Locking can be turned off for file systems without working ``flock`` (some Lustre, Cray
DVS and NFS mounts) with ``locking="none"`` or ``BSB_STORE_LOCKING=none``; then only
one process may use a store at a time and nothing checks it. Where ``flock`` itself
fails (ENOLCK, ENOSYS: NFS without lockd, Lustre mounted ``-o noflock``) that is said at
once with a :class:`~bsb_store.exceptions.LockingError`, never waited out as contention.

Read-only places (a read-only mount, a directory or lock file of another user): an
existing lock file is opened read-only (``flock`` works on a read-only descriptor, so
readers still exclude the owner's writers); where no lock file exists and none can be
created, reads take no lock when nothing can write there either (a read-only mount, a
directory nobody may write). Exclusive holds, and so every write, then raise a
:class:`~bsb_store.exceptions.ReadOnlyError` at once.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import struct
import threading
import time
from collections.abc import Iterator
from typing import Literal

import portalocker

from ..exceptions import InvalidInputError, LockingError, LockTimeoutError, ReadOnlyError

LockingMode = Literal["flock", "none"]
_GEN = struct.Struct("<q")
DEFAULT_TIMEOUT = float(os.environ.get("BSB_STORE_LOCK_TIMEOUT", 60.0))
#: ``open`` errors that mean "this user may not write here" (not "it is missing").
READ_ONLY_ERRNOS = (errno.EROFS, errno.EACCES, errno.EPERM)
#: ``flock`` errors that mean "this file system has no working flock", not contention.
_NO_FLOCK_ERRNOS = {
    errno.ENOLCK: "ENOLCK, no locks available",
    errno.ENOSYS: "ENOSYS, not implemented",
    errno.EOPNOTSUPP: "EOPNOTSUPP, not supported",
}


def parse_locking(value: str | None) -> LockingMode:
    """The locking mode from an argument or ``BSB_STORE_LOCKING`` (default ``flock``)."""
    value = value or os.environ.get("BSB_STORE_LOCKING") or "flock"
    value = value.lower()
    if value in ("flock", "auto", "true", "1"):
        return "flock"
    if value in ("none", "off", "false", "0"):
        return "none"
    raise InvalidInputError(
        f"Unknown locking mode {value!r}: expected 'flock' or 'none'.", locking=value
    )


class SidecarLock:
    """Shared/exclusive lock on one sidecar file, reentrant within the process.

    Thread safety: a process-local ``threading.RLock`` serialises the threads of this
    process around every hold, so the ``flock`` state is only changed by one thread at
    a time.
    """

    def __init__(
        self, path: str, mode: LockingMode = "flock", timeout: float = DEFAULT_TIMEOUT
    ):
        self.path = path
        self.mode = mode
        self.timeout = timeout
        self._thread_lock = threading.RLock()
        self._fh = None
        self._level = 0  # 0 none, 1 shared, 2 exclusive (the flock state we hold)
        self._holds: list[int] = []
        self._read_only: str | None = None  # why the lock file is not writable
        self._unlocked = False  # no lock file can exist here: reads take no lock

    # ------------------------------------------------------------------ file handle
    @property
    def opened(self) -> bool:
        """Whether this process resolved the lock file: it has it open (it exists
        then), or found that none can exist here and reads take no lock."""
        return self._fh is not None or self._unlocked

    @property
    def read_only(self) -> bool:
        """Whether the lock file is open read-only or absent (after the first hold):
        this process may read the store but never write it."""
        return self._read_only is not None

    def _file(self):
        """The open lock file; None when none can exist here (reads take no lock)."""
        if self._fh is None and not self._unlocked:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            except OSError as e:
                if e.errno not in READ_ONLY_ERRNOS:
                    raise
                fd = self._open_read_only(e)
            if fd is not None:
                self._fh = os.fdopen(fd, "r+b" if self._read_only is None else "rb", 0)
        return self._fh

    def _open_read_only(self, error: OSError) -> int | None:
        """After ``error`` (the lock file cannot be opened for writing): the lock file
        opened read-only, or None to read without locks where nothing can write."""
        self._read_only = f"{error.strerror}: '{self.path}'"
        try:
            return os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            pass
        except OSError as e:
            raise LockingError(
                f"Cannot open the lock file '{self.path}' ({e.strerror}), which "
                "readers and writers of the store beside it share: ask its owner to "
                "make it readable, or, if nobody writes to this store, set "
                "BSB_STORE_LOCKING=none.",
                path=self.path,
            ) from e
        directory = os.path.dirname(self.path) or "."
        if error.errno == errno.EROFS or not _anyone_may_write(directory):
            self._unlocked = True  # nobody can create it, so nobody can write either
            return None
        raise LockingError(
            f"Cannot create the lock file '{self.path}' ({error.strerror}) and none "
            f"exists, while others may write in '{directory}': reading without it "
            "could see a write in progress. Ask the store's owner to open it once "
            "(that creates the lock file), or, if nobody writes to this store, set "
            "BSB_STORE_LOCKING=none.",
            path=self.path,
        ) from error

    def require_writable(self) -> None:
        """Raise :class:`ReadOnlyError` when this process may only read the store."""
        self._file()
        if self._read_only is not None:
            root = self.path[: -len(".lock")] if self.path.endswith(".lock") else None
            what = f"the store '{root}'" if root else f"the file guarded by '{self.path}'"
            raise ReadOnlyError(
                f"Cannot write to {what}: it is read-only for this process ("
                f"{self._read_only}; a read-only mount, or a directory or lock file "
                "of another user). Reads work; copy the store somewhere writable to "
                "change it.",
                path=root or self.path,
            )

    def close(self) -> None:
        """Release any hold and close the lock file (idempotent)."""
        with self._thread_lock:
            if self._fh is not None:
                if self._level and self.mode == "flock":
                    with contextlib.suppress(Exception):
                        portalocker.unlock(self._fh)
                self._fh.close()
                self._fh = None
            self._level = 0
            self._holds.clear()
            self._read_only = None
            self._unlocked = False

    # ------------------------------------------------------------------------ holds
    @contextlib.contextmanager
    def shared(self, timeout: float | None = None) -> Iterator[SidecarLock]:
        with self._hold(1, timeout):
            yield self

    @contextlib.contextmanager
    def exclusive(self, timeout: float | None = None) -> Iterator[SidecarLock]:
        with self._hold(2, timeout):
            yield self

    @property
    def held(self) -> int:
        """0 when not held by this process, 1 for shared, 2 for exclusive."""
        return self._level

    @contextlib.contextmanager
    def _hold(self, level: int, timeout: float | None) -> Iterator[None]:
        with self._thread_lock:
            previous = self._level
            if level > previous:
                self._acquire(level, self.timeout if timeout is None else timeout)
            self._holds.append(level)
            try:
                yield
            finally:
                self._holds.pop()
                wanted = max(self._holds, default=0)
                if wanted < self._level:
                    self._downgrade(wanted)

    def _acquire(self, level: int, timeout: float) -> None:
        fh = self._file()
        if level == 2:
            self.require_writable()
        if self.mode == "none" or fh is None:
            self._level = level
            return
        flags = portalocker.LockFlags.NON_BLOCKING | (
            portalocker.LockFlags.EXCLUSIVE
            if level == 2
            else portalocker.LockFlags.SHARED
        )
        deadline = time.monotonic() + timeout
        delay = 0.0005
        while True:
            try:
                _lock(fh, flags, self.path)
                self._level = level
                return
            except portalocker.exceptions.AlreadyLocked as e:
                if time.monotonic() >= deadline:
                    kind = "exclusive" if level == 2 else "shared"
                    raise LockTimeoutError(
                        f"Could not take the {kind} lock on '{self.path}' within "
                        f"{timeout:g} s: another process holds it. Set "
                        "BSB_STORE_LOCK_TIMEOUT to wait longer, or "
                        "BSB_STORE_LOCKING=none on file systems without locks.",
                        path=self.path,
                        timeout=timeout,
                    ) from e
                time.sleep(delay)
                delay = min(delay * 2, 0.05)

    def _downgrade(self, level: int) -> None:
        if self.mode == "flock" and self._fh is not None:
            if level == 0:
                portalocker.unlock(self._fh)
            else:  # exclusive -> shared: flock converts in place
                _lock(self._fh, portalocker.LockFlags.SHARED, self.path)
        self._level = level

    # ------------------------------------------------------------------- generation
    def read_generation(self) -> int:
        fh = self._file()
        if fh is None:  # no lock file can exist here: nobody writes
            return 0
        data = os.pread(fh.fileno(), _GEN.size, 0)
        return _GEN.unpack(data)[0] if len(data) == _GEN.size else 0

    def bump_generation(self) -> int:
        """Increment the generation; call only while holding the exclusive lock."""
        self.require_writable()
        gen = self.read_generation() + 1
        os.pwrite(self._file().fileno(), _GEN.pack(gen), 0)
        return gen


def _anyone_may_write(directory: str) -> bool:
    """Whether any user may create files in ``directory`` (its write bits)."""
    try:
        return bool(
            os.stat(directory).st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)
        )
    except OSError:
        return True


def _lock(fh, flags, path: str) -> None:
    """``portalocker.lock``; a file system without working ``flock`` raises a
    :class:`LockingError` at once (contention raises ``AlreadyLocked``)."""
    try:
        portalocker.lock(fh, flags)
    except portalocker.exceptions.AlreadyLocked:
        raise
    except portalocker.exceptions.LockException as e:
        cause = e.__cause__ if isinstance(e.__cause__, OSError) else None
        code = getattr(cause, "errno", None)
        what = _NO_FLOCK_ERRNOS.get(code) if code is not None else None
        reason = f"flock() failed ({what})" if what else f"flock() failed ({e})"
        error = LockingError(
            f"Cannot lock '{path}': {reason}. The file system under it does not "
            "support flock (NFS without lockd, Lustre mounted with -o noflock, some "
            "Cray DVS mounts), so processes cannot coordinate their access to the "
            "store. Mount it with working locks (Lustre: -o flock; NFS: run lockd), "
            "or, when only one process uses the store at a time, set "
            "BSB_STORE_LOCKING=none (locking='none'). MPI jobs then need their "
            "ranks coordinated through MPI: pass the communicator to the engine and "
            "let no other process touch the store while the job runs.",
            path=path,
        )
        error.errno = code  # an OSError of the errno flock() failed with
        raise error from e


def try_exclusive(path: str) -> object | None:
    """Take an exclusive ``flock`` on ``path`` without waiting; the open file (keep it to
    keep the lock) or None when another process holds it.

    :raises LockingError: the file system has no working ``flock``."""
    mode = "r+b"
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as e:
        if e.errno not in READ_ONLY_ERRNOS or not os.path.exists(path):
            raise
        fd, mode = os.open(path, os.O_RDONLY), "rb"  # flock works read-only too
    fh = os.fdopen(fd, mode, buffering=0)
    try:
        _lock(
            fh, portalocker.LockFlags.EXCLUSIVE | portalocker.LockFlags.NON_BLOCKING, path
        )
    except portalocker.exceptions.AlreadyLocked:
        fh.close()
        return None
    except BaseException:
        fh.close()
        raise
    return fh
