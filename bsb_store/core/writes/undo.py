"""An undo log below HDF5: every write session on the root is all or nothing.

HDF5 flushes are not atomic. A flush writes dirty metadata (object headers, B-tree
nodes, heaps, the superblock) one block at a time, so a process killed in the middle of
one leaves a file that is neither the state before the flush nor the state after it,
and that HDF5 may refuse to open. A journal written *through* HDF5 cannot protect
against that: the journal itself lives in the structures being torn.

So the root is opened for writing through :class:`UndoFile`, a Python file object that
HDF5 uses as its file driver (h5py's ``fileobj`` driver). Before any byte that existed
when the session began is overwritten for the first time, the old content of its page is
appended to a sidecar ``<root>.undo`` log; bytes past the old end of the file need no
copy, the old size is recorded in the log's header. The session commits by closing the
HDF5 file and deleting the log. A process that finds a log (the writer died) restores
every page it holds and truncates the root to its old size: byte for byte the file as it
was before the session (:func:`rollback`). A killed rollback is simply run again.

The log is written with plain ``write`` calls that reach the operating system before
the root's page is overwritten, which is what surviving ``SIGKILL`` needs; like the rest
of bsb-store it does not ``fsync`` (see the durability section of the concurrency
docs): a kernel crash or power cut is out of scope.

A session whose write fails (a full disk, an I/O error) is *failed*: that write and
every later one go to pages kept in memory instead of the disk, and HDF5 reads back
what it wrote. HDF5 never sees the error (its error paths for a failed flush can crash
the interpreter, in ``File.close`` or at exit); the session can only be undone: the
next :meth:`UndoFile.reserve` raises, and :meth:`UndoFile.commit` rolls the session
back and raises. Before it writes, a session checks the free space of the
root's file system against an estimate of what it will write
(:meth:`UndoFile.reserve`), so that a full disk is usually refused before HDF5 runs
out in the middle of a write.

Readers never need the log: they take the shared lock, which a writer's exclusive lock
excludes, and a dead writer's log is rolled back under the exclusive lock before anyone
reads. :class:`RollbackView` lets read-only tools (``bsb-store check``) look at the
rolled-back state without changing the file.
"""

from __future__ import annotations

import bisect
import contextlib
import errno
import io
import itertools
import os
import struct
import zlib

import h5py

from ...exceptions import DiskFullError, StoreIOError

#: Size of the unit of old content saved in the log. Metadata writes are small and
#: clustered; one page per first touch keeps the bookkeeping to a set of integers.
PAGE = 4096
MAGIC = b"BSBUNDO1"
_HEADER = struct.Struct("<8sQI")  # magic, size of the root before the session, crc
_RECORD = struct.Struct("<QII")  # offset, length, crc32 of offset+length+data


#: Free space a write session needs on top of its estimated writes: HDF5 metadata,
#: the undo log's header and slack for what the estimate misses.
SESSION_MARGIN = 1 << 20
#: Estimated bytes written per (set, chunk) group a merge touches (index entries, new
#: chunk datasets, B-tree nodes; about 5.4 KiB measured for a new placement chunk).
GROUP_BYTES = 16 << 10


def space_needed(payload: int, groups: int, base: int) -> int:
    """Free bytes a session writing ``payload`` data bytes into ``groups`` (set, chunk)
    groups of a root of ``base`` bytes should find: twice the data (HDF5 allocates
    chunks whole and may reallocate), the groups' metadata, the undo log (the old
    content of every page overwritten; at most the whole root) and a margin."""
    writes = 2 * payload + groups * GROUP_BYTES
    undo = min(base, payload + groups * GROUP_BYTES)
    return writes + undo + SESSION_MARGIN


def free_space(path: str) -> int:
    """Bytes an unprivileged process may still write on the file system of ``path``."""
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def undo_path(root: str) -> str:
    """The undo log's path for ``root``."""
    return root + ".undo"


def has_undo(root: str) -> bool:
    """Whether ``root`` has an undo log: a write session that did not finish."""
    return os.path.exists(undo_path(root))


def _pwrite(fd: int, data, offset: int) -> None:
    """Write all of ``data`` at ``offset`` (the one place bytes reach the disk, so a
    test can cut a session at any write)."""
    view = memoryview(data).cast("B")
    while len(view):
        n = os.pwrite(fd, view, offset)
        view = view[n:]
        offset += n


def _record_crc(offset: int, data) -> int:
    return zlib.crc32(data, zlib.crc32(struct.pack("<QI", offset, len(data))))


class PositionedFile(io.RawIOBase):
    """The position bookkeeping of the file objects given to HDF5's ``fileobj``
    driver (it seeks, then reads or writes): subclasses say how long the file is
    (:meth:`_size`) and how to read and write at ``self._pos``."""

    _pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            self._pos = offset
        elif whence == io.SEEK_CUR:
            self._pos += offset
        elif whence == io.SEEK_END:
            self._pos = self._size() + offset
        else:
            raise ValueError(f"invalid whence {whence!r}")
        return self._pos

    def tell(self) -> int:
        return self._pos

    def _size(self) -> int:
        raise NotImplementedError


class _FileObject(PositionedFile):
    """A positioned file over a raw descriptor (``pread``/``pwrite``: no buffering
    layer between HDF5 and the kernel)."""

    def __init__(self, fd: int):
        self._fd = fd
        self._pos = 0

    def _size(self) -> int:
        return os.fstat(self._fd).st_size

    def readinto(self, buffer) -> int:
        view = memoryview(buffer).cast("B")
        done = 0
        while done < len(view):
            n = os.preadv(self._fd, [view[done:]], self._pos + done)
            if n <= 0:
                break
            done += n
        self._pos += done
        return done

    def fileno(self) -> int:
        return self._fd


class UndoFile(_FileObject):
    """The root file opened for a write session, saving old pages before overwriting.

    Create it under the root's exclusive lock, with no undo log present (roll a
    leftover one back first), and give it to ``h5py.File(obj, "r+")``; after the HDF5
    file is closed, :meth:`commit` ends the session (or :meth:`abort` undoes it).
    """

    def __init__(self, root: str):
        fd = os.open(root, os.O_RDWR)
        super().__init__(fd)
        #: The first write error (the session is failed: it can only be undone).
        self.error: OSError | None = None
        self._overlay: dict[int, bytearray] = {}  # page -> content (failed session)
        self._vsize = 0  # the file size HDF5 believes in, once failed
        self.root = root
        self.base = self._size()
        self._saved: set[int] = set()
        self._log_path = undo_path(root)
        self._reserved = [0, 0]  # payload bytes, groups
        self._checked = False
        #: What the session is doing (set by its user, for error messages), and what
        #: it was doing when a write failed.
        self.operation = "writing"
        self.failed_operation = "writing"
        self.saved_bytes = 0
        self._log_end = 0
        try:
            self._log = os.open(
                self._log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644
            )
        except BaseException:
            os.close(fd)
            raise
        try:
            head = struct.pack("<8sQ", MAGIC, self.base)
            self._append_log(head + struct.pack("<I", zlib.crc32(head)))
        except BaseException:
            self.abort()  # a torn header: rollback just deletes the log
            raise

    def writable(self) -> bool:
        return True

    # ------------------------------------------------------------------ free space
    def reserve(self, payload: int, groups: int = 0, operation: str = "write") -> None:
        """Check that the root's file system has room for ``payload`` more data bytes
        in ``groups`` more (set, chunk) groups, on top of what the session reserved
        before (see :func:`space_needed`).

        :raises DiskFullError: there is not; nothing was written yet for it.
        :raises StoreIOError: a write of the session failed already.
        """
        if self.error is not None:
            raise session_error(self.root, operation, self.error)
        if not payload and not groups and self._checked:
            return  # nothing more to check for
        self._checked = True
        self._reserved[0] += max(0, int(payload))
        self._reserved[1] += max(0, int(groups))
        total, ngroups = self._reserved
        need = space_needed(total, ngroups, self.base)
        # What the session already put on disk counts towards what it needs.
        used = self._log_end + max(0, os.fstat(self._fd).st_size - self.base)
        where = os.path.dirname(os.path.abspath(self.root))
        free = free_space(where)
        if free + used < need:
            missing = need - used
            raise DiskFullError(
                f"Not enough free space for {operation} on '{self.root}': about "
                f"{mib(missing)} needed ({mib(total)} of data in {ngroups} groups, "
                f"plus the undo log and HDF5 metadata), {mib(free)} free in "
                f"'{where}'. Nothing was changed and nothing is lost; free space "
                "and retry.",
                path=self.root,
                operation=operation,
                needed=missing,
                free=free,
                directory=where,
            )

    # --------------------------------------------------------------------- failure
    def _fail(self, e: OSError) -> None:
        if self.error is None:
            self.error = e
            self.failed_operation = self.operation
            self._vsize = max(self._vsize, os.fstat(self._fd).st_size)

    def _size(self) -> int:
        return self._vsize if self.error is not None else os.fstat(self._fd).st_size

    def readinto(self, buffer) -> int:
        if self.error is None:
            return super().readinto(buffer)
        start = self._pos
        view = memoryview(buffer).cast("B")
        end = min(start + len(view), self._size())
        n = max(0, end - start)
        if n:
            got = os.preadv(self._fd, [view[:n]], start)
            view[got:n] = bytes(n - got)
            for page in range(start // PAGE, (end - 1) // PAGE + 1):
                data = self._overlay.get(page)
                if data is not None:
                    off = page * PAGE
                    lo, hi = max(off, start), min(off + PAGE, end)
                    view[lo - start : hi - start] = data[lo - off : hi - off]
        self._pos = start + n
        return n

    def _write_overlay(self, view: memoryview) -> None:
        """A write of a failed session: kept in memory, never on disk."""
        start, end = self._pos, self._pos + len(view)
        for page in range(start // PAGE, (end - 1) // PAGE + 1):
            data = self._overlay.get(page)
            if data is None:
                data = bytearray(PAGE)
                self._pos = page * PAGE
                self.readinto(data)  # the content HDF5 wrote or found
                self._overlay[page] = data
            lo, hi = max(page * PAGE, start), min((page + 1) * PAGE, end)
            data[lo - page * PAGE : hi - page * PAGE] = view[lo - start : hi - start]
        self._pos = end
        self._vsize = max(self._vsize, end)

    def _append_log(self, data: bytes) -> None:
        _pwrite(self._log, data, self._log_end)
        self._log_end += len(data)

    def _save(self, start: int, end: int) -> None:
        """Log the old content of the pages of ``[start, end)`` not logged yet."""
        end = min(end, self.base)
        if start >= end:
            return
        first, last = start // PAGE, (end - 1) // PAGE
        page = first
        while page <= last:
            if page in self._saved:
                page += 1
                continue
            run = page
            while run <= last and run not in self._saved:
                self._saved.add(run)
                run += 1
            lo, hi = page * PAGE, min(run * PAGE, self.base)
            old = os.pread(self._fd, hi - lo, lo)
            rec = _RECORD.pack(lo, len(old), _record_crc(lo, old))
            self._append_log(rec + old)
            self.saved_bytes += len(old)
            page = run

    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        if not len(view):
            return 0
        if self.error is None:
            try:
                self._save(self._pos, self._pos + len(view))
                _pwrite(self._fd, view, self._pos)
            except OSError as e:
                self._fail(e)  # the root's page holds old content or part of this
            else:
                self._pos += len(view)
                return len(view)
        self._write_overlay(view)
        return len(view)

    def truncate(self, size: int | None = None) -> int:
        size = self._pos if size is None else size
        if self.error is None:
            try:
                self._save(size, self.base)
                os.ftruncate(self._fd, size)
                return size
            except OSError as e:
                self._fail(e)
        self._vsize = size
        return size

    def flush(self) -> None:
        """Nothing is buffered here: every write went to the kernel already."""

    def close(self) -> None:
        if not self.closed:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            with contextlib.suppress(OSError):
                os.close(self._log)
        super().close()

    def commit(self) -> None:
        """End the session keeping its changes: delete the log (the commit point).

        :raises StoreIOError: a write of the session failed (:class:`DiskFullError`
            for a full disk); the session is undone instead.
        """
        if self.error is not None:
            undone = self.try_abort()
            raise session_error(self.root, self.failed_operation, self.error, undone)
        self.close()
        os.unlink(self._log_path)

    def abort(self) -> None:
        """End the session undoing its changes (the HDF5 file must be closed)."""
        self.close()
        rollback(self.root)

    def try_abort(self) -> bool:
        """:meth:`abort`; False when the rollback failed (an I/O error): the log stays,
        and the next write session or reader of the root rolls it back."""
        try:
            self.abort()
        except OSError:
            return False
        return True


def session_error(
    root: str, operation: str, error: BaseException, undone: bool = True
) -> StoreIOError:
    """The error a failed write session on ``root`` raises (a :class:`DiskFullError`
    for a full disk or quota); ``error`` is what the operating system or HDF5 said,
    ``undone`` whether the session's rollback finished."""
    code = getattr(error, "errno", None)
    full = code in (errno.ENOSPC, errno.EDQUOT)
    cls = DiskFullError if full else StoreIOError
    reason = "the disk is full" if full else "an I/O error"
    rollback = (
        "The write session was rolled back"
        if undone
        else f"The write session's rollback failed too; its undo log '{undo_path(root)}' "
        "stays and is rolled back by the next process that opens the store"
    )
    return cls(
        f"Writing '{root}' failed ({operation}): {reason} "
        f"({type(error).__name__}: {error}). {rollback}: the call changed nothing and "
        "pending appends stay in their shards."
        + (" Free space and retry." if full else ""),
        path=root,
        operation=operation,
    )


def _scan(log: int, size: int):
    """The complete records of an undo log, in order, as ``(offset, data, at)`` (``at``:
    where ``data`` lies in the log); a torn last one is left out: its page was never
    overwritten."""
    pos = _HEADER.size
    while pos + _RECORD.size <= size:
        offset, length, crc = _RECORD.unpack(os.pread(log, _RECORD.size, pos))
        data = os.pread(log, length, pos + _RECORD.size)
        if len(data) < length or _record_crc(offset, data) != crc:
            return
        yield offset, data, pos + _RECORD.size
        pos += _RECORD.size + length


def _records(log: int, size: int):
    """The complete records of an undo log, in order, as ``(offset, data)``."""
    for offset, data, _at in _scan(log, size):
        yield offset, data


def _header(log: int) -> int | None:
    """The root's size before the session, or None for a log torn while being
    started (then the session never wrote to the root)."""
    raw = os.pread(log, _HEADER.size, 0)
    if len(raw) < _HEADER.size:
        return None
    magic, base, crc = _HEADER.unpack(raw)
    if magic != MAGIC or zlib.crc32(raw[:16]) != crc:
        return None
    return base


def rollback(root: str) -> bool:
    """Restore ``root`` to its state before an unfinished write session and delete the
    log. Call it under the root's exclusive lock. Returns whether there was a log.

    Idempotent: killed halfway, running it again gives the same result."""
    path = undo_path(root)
    try:
        log = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        base = _header(log)
        if base is not None and os.path.exists(root):
            fd = os.open(root, os.O_RDWR)
            try:
                for offset, data in _records(log, os.fstat(log).st_size):
                    _pwrite(fd, data, offset)
                os.ftruncate(fd, base)
            finally:
                os.close(fd)
    finally:
        os.close(log)
    os.unlink(path)
    return True


class RollbackView(_FileObject):
    """A read-only file object showing ``root`` as :func:`rollback` would leave it,
    without changing anything (for ``bsb-store check`` and ``info``).

    HDF5 reads through it in many small requests, so a read costs a binary search of
    the log's records sorted by offset (found by the same scan :func:`rollback` uses),
    and the saved bytes are read from the log only where a request covers them: the
    log is not held in memory, and a read does not grow with the size of the log."""

    def __init__(self, root: str):
        super().__init__(os.open(root, os.O_RDONLY))
        self.root = root
        self._log: int | None = None
        self._base: int | None = None
        #: The records as ``(offset, length, position of the data in the log)``,
        #: sorted by offset; ``_starts`` their offsets (for :func:`bisect.bisect`).
        self._runs: list[tuple[int, int, int]] = []
        self._starts: list[int] = []
        #: False when records overlap (never written so, but then, as in
        #: :func:`rollback`, later records win): ``_runs`` is in log order instead
        #: and every read goes through all of them.
        self._sorted = True
        try:
            log = os.open(undo_path(root), os.O_RDONLY)
        except FileNotFoundError:
            return
        except BaseException:
            os.close(self._fd)
            raise
        self._log = log
        try:
            self._base = _header(log)
            if self._base is not None:
                self._index(log)
        except BaseException:
            self.close()
            raise

    def _index(self, log: int) -> None:
        runs = [
            (offset, len(data), at)
            for offset, data, at in _scan(log, os.fstat(log).st_size)
        ]
        ordered = sorted(runs)
        if all(a[0] + a[1] <= b[0] for a, b in itertools.pairwise(ordered)):
            self._runs = ordered
            self._starts = [r[0] for r in ordered]
        else:
            self._runs, self._sorted = runs, False

    def _size(self) -> int:
        return self._base if self._base is not None else super()._size()

    def readinto(self, buffer) -> int:
        start = self._pos
        view = memoryview(buffer).cast("B")
        end = min(start + len(view), self._size())
        n = max(0, end - start)
        if n:
            got = os.preadv(self._fd, [view[:n]], start)
            if got < n:
                view[got:n] = bytes(n - got)
            runs, k = self._runs, 0
            if self._sorted:
                k = max(0, bisect.bisect_right(self._starts, start) - 1)
            while k < len(runs):
                offset, length, at = runs[k]
                if self._sorted and offset >= end:
                    break
                lo, hi = max(offset, start), min(offset + length, end)
                if lo < hi:
                    self._read_log(view[lo - start : hi - start], at + lo - offset)
                k += 1
        self._pos = start + n
        return n

    def _read_log(self, view: memoryview, at: int) -> None:
        """Fill ``view`` with the log's bytes from ``at`` (checked by the scan)."""
        done = 0
        while done < len(view):
            got = os.preadv(self._log, [view[done:]], at + done)
            if got <= 0:
                raise OSError(errno.EIO, "the undo log shrank while read", self.root)
            done += got

    def close(self) -> None:
        if not self.closed:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            if self._log is not None:
                with contextlib.suppress(OSError):
                    os.close(self._log)
        super().close()


def open_view(root: str) -> tuple[h5py.File, RollbackView]:
    """``root`` opened read-only as it is after a rollback of its undo log."""
    view = RollbackView(root)
    try:
        return h5py.File(view, "r"), view
    except BaseException:
        view.close()
        raise
