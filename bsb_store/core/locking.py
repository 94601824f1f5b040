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
one process may use a store at a time and nothing checks it.
"""

from __future__ import annotations

import contextlib
import os
import struct
import threading
import time
from collections.abc import Iterator
from typing import Literal

import portalocker

from ..exceptions import InvalidInputError, LockTimeoutError

LockingMode = Literal["flock", "none"]
_GEN = struct.Struct("<q")
DEFAULT_TIMEOUT = float(os.environ.get("BSB_STORE_LOCK_TIMEOUT", 60.0))


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

    # ------------------------------------------------------------------ file handle
    @property
    def opened(self) -> bool:
        """Whether this process has the lock file open (it exists then)."""
        return self._fh is not None

    def _file(self):
        if self._fh is None:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            self._fh = os.fdopen(fd, "r+b", buffering=0)
        return self._fh

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
        if self.mode == "none":
            self._file()
            self._level = level
            return
        flags = portalocker.LockFlags.NON_BLOCKING | (
            portalocker.LockFlags.EXCLUSIVE
            if level == 2
            else portalocker.LockFlags.SHARED
        )
        fh = self._file()
        deadline = time.monotonic() + timeout
        delay = 0.0005
        while True:
            try:
                portalocker.lock(fh, flags)
                self._level = level
                return
            except portalocker.exceptions.LockException as e:
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
                portalocker.lock(self._fh, portalocker.LockFlags.SHARED)
        self._level = level

    # ------------------------------------------------------------------- generation
    def read_generation(self) -> int:
        data = os.pread(self._file().fileno(), _GEN.size, 0)
        return _GEN.unpack(data)[0] if len(data) == _GEN.size else 0

    def bump_generation(self) -> int:
        """Increment the generation; call only while holding the exclusive lock."""
        gen = self.read_generation() + 1
        os.pwrite(self._file().fileno(), _GEN.pack(gen), 0)
        return gen


def try_exclusive(path: str) -> object | None:
    """Take an exclusive ``flock`` on ``path`` without waiting; the open file (keep it to
    keep the lock) or None when another process holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    fh = os.fdopen(fd, "r+b", buffering=0)
    try:
        portalocker.lock(
            fh, portalocker.LockFlags.EXCLUSIVE | portalocker.LockFlags.NON_BLOCKING
        )
    except portalocker.exceptions.LockException:
        fh.close()
        return None
    return fh
