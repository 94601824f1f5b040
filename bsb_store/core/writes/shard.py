"""Per-writer shard files: the append path that takes no cross-process lock.

Every process that appends to a store owns one shard file next to the root
(``<root>.shards/<writer>.h5``) and keeps it open for its lifetime. An append *call*
becomes one or more records ``(stream, key0, key1, rows)``; a stream is a flat growable
dataset per (resource kind, set, column), and a log table says which rows of which
stream belong to which call and chunk. The commit protocol is:

1. take the shard's own sidecar lock (only a consolidator reading this shard contends);
2. resize and write the data rows and the log rows, then ``flush`` (HDF5 writes them
   to the operating system: a killed process no longer loses them);
3. write the new number of committed log rows into the sidecar lock file with one
   ``pwrite``: that is the commit record;
4. release.

A reader trusts only committed log rows, so a writer killed at any instant leaves its
shard with every returned call and no part of the call in flight. A second sidecar,
``<writer>.alive``, is ``flock``-ed for the writer's lifetime: a consolidator that can
lock it knows the writer is gone and may delete the shard once it is merged.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import socket
import struct
import threading
import uuid
import zlib
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import h5py
import numpy as np

from ...exceptions import (
    DiskFullError,
    FormatError,
    FormatVersionError,
    ShardChecksumError,
    ShardLostError,
    StoreError,
    StoreIOError,
)
from ..locking import LockingMode, SidecarLock, try_exclusive
from .rows import append_rows

_COUNT = struct.Struct("<q")
_LEN = struct.Struct("<q")
#: The shard file format this bsb-store writes (attribute ``bsb_store_shard``). Format 2
#: adds a seventh log column, the CRC-32 of each record's log row and rows; format 1
#: shards (no checksums, written by bsb-store before 0.3) are still read and merged.
SHARD_FORMAT = 2
#: Every shard format this bsb-store reads.
SHARD_FORMATS = (1, 2)
#: The objects a shard file holds; a file without ``bsb_store_shard`` that holds
#: nothing else is a shard whose writer died before its first flush finished.
SHARD_OBJECTS = frozenset({"log", "committed", "streams", "s"})
_STR = h5py.string_dtype()
LOG_COLUMNS = 7  # seq, stream, key0, key1, start, nrows, crc (format 1: no crc)
_HEADER = 6  # the log columns a record's checksum covers, with its rows
#: Bytes of one HDF5 chunk of a shard's row datasets (see ``ShardWriter._stream_id``).
SHARD_CHUNK_BYTES = 2**17
#: Deferred (buffered) records are committed once they hold this many bytes.
BUFFER_BYTES = int(os.environ.get("BSB_STORE_BUFFER_BYTES", 16 * 2**20))


@dataclass
class Record:
    """Rows of one stream for one chunk key, part of one append call."""

    stream: tuple[str, ...]
    key0: int
    key1: int
    rows: np.ndarray | None  # None: a row count without data (entities)
    nrows: int


@dataclass
class Call:
    """All records of one committed append call, in the order they were written."""

    seq: int
    records: list[Record] = field(default_factory=list)


def record_crc(header: Sequence[int], rows: np.ndarray | None) -> int:
    """CRC-32 of a record: its six log values and the bytes of its rows as a reader
    gets them back (strings as UTF-8, each prefixed with its length)."""
    crc = zlib.crc32(np.asarray(header, dtype="<i8").tobytes())
    if rows is None or not rows.size:
        return crc
    if rows.dtype.kind in "OUS":
        for x in rows.ravel():
            b = (x.decode() if isinstance(x, bytes) else str(x)).encode()
            crc = zlib.crc32(b, zlib.crc32(_LEN.pack(len(b)), crc))
        return crc
    return zlib.crc32(np.ascontiguousarray(rows).data, crc)


def stream_name(stream: Sequence[str]) -> str:
    return json.dumps(list(stream))


def shard_paths(shard_h5: str) -> tuple[str, str]:
    """The (lock, alive) sidecars of a shard file."""
    base = shard_h5[: -len(".h5")]
    return base + ".lock", base + ".alive"


def read_commit_hint(lock_path: str) -> int:
    """The committed log row count a writer mirrored into its lock file (0 if none)."""
    try:
        with open(lock_path, "rb") as f:
            data = f.read(_COUNT.size)
    except FileNotFoundError:
        return 0
    return _COUNT.unpack(data)[0] if len(data) == _COUNT.size else 0


class ShardWriter:
    """The append side of one process's shard file."""

    def __init__(
        self, shard_dir: str, locking: LockingMode = "flock", root: str | None = None
    ):
        os.makedirs(shard_dir, exist_ok=True)
        #: The root this shard belongs to, and the identity (device, inode) of both
        #: files when the shard was created: an append checks both (two ``stat``
        #: calls), so that one whose shard or root was removed or replaced behind
        #: this process's back raises instead of returning (:meth:`verify`).
        self.root = root
        self.root_ident = _ident(root) if root is not None else None
        #: Set by the engine: whether the file now at ``root`` is the same store
        #: (called only when the root's inode changed).
        self.same_store: Any = None
        self.name = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:10]}"
        self.path = os.path.join(shard_dir, self.name + ".h5")
        lock_path, alive_path = shard_paths(self.path)
        self._alive = try_exclusive(alive_path) if locking == "flock" else None
        self.lock = SidecarLock(lock_path, locking)
        self._tlock = threading.RLock()
        try:
            self._create_file()
        except BaseException:
            # Nothing was committed: release the sidecars and leave no shard behind.
            self.lock.close()
            if self._alive is not None:
                self._alive.close()
            with contextlib.suppress(OSError):
                remove_shard(self.path)
            raise
        self._ident = _ident(self.path)
        self._streams: dict[tuple[Any, ...], int] = {}
        self._data: dict[int, h5py.Dataset] = {}
        self._lengths: dict[int, int] = {}  # rows in each data dataset
        self._seq = 0
        self.committed = 0
        self.calls_committed = 0
        #: Whether the root knows this shard (see ``HDF5Engine._writer``).
        self.registered = False
        #: The error that made this shard unusable (None while it is usable).
        self.failed: str | None = None
        self._failed_errno: int | None = None
        self._pending: list[list[Record]] = []
        self._pending_bytes = 0
        self._defer = 0
        self.closed = False

    def _create_file(self) -> None:
        """Create the shard file with its empty log, commit record and stream table."""
        self._file = h5py.File(self.path, "w", locking=False)
        try:
            self._file.attrs["bsb_store_shard"] = SHARD_FORMAT
            self._file.attrs["pid"] = os.getpid()
            self._log = self._file.create_dataset(
                "log",
                (0, LOG_COLUMNS),
                dtype=np.int64,
                maxshape=(None, LOG_COLUMNS),
                chunks=(4096, LOG_COLUMNS),
            )
            self._committed_ds = self._file.create_dataset(
                "committed", data=np.zeros(1, np.int64)
            )
            self._streams_ds = self._file.create_dataset(
                "streams", (0,), dtype=_STR, maxshape=(None,), chunks=(256,)
            )
            self._file.flush()
        except BaseException:
            self._file.close()
            raise

    # ----------------------------------------------------------------------- append
    def detached(self) -> str | None:
        """Why this shard can no longer take appends that a merge would find: its file
        or the root was removed or replaced (None while both are in place)."""
        if _ident(self.path) != self._ident:
            return (
                f"its shard file '{self.path}' was removed or replaced (the store "
                "was moved, removed or re-created by another process, or its "
                f"'{os.path.basename(os.path.dirname(self.path))}' folder deleted)"
            )
        if self.root is None:  # a shard used on its own (tests)
            return None
        ident = _ident(self.root)
        if ident is None:
            return f"the root '{self.root}' was removed or moved by another process"
        if self.root_ident is not None and ident != self.root_ident:
            # Replaced: by the same store (``compact`` renames its copy over the
            # root), or by another file. Rare, so asking the root is affordable.
            if self.same_store is None or not self.same_store():
                return f"the root '{self.root}' was replaced by another file"
            self.root_ident = ident
        return None

    def verify(self) -> None:
        """Raise :class:`ShardLostError` when :meth:`detached`."""
        why = self.detached()
        if why is not None:
            raise ShardLostError(
                f"Cannot append to '{self.root or self.path}': {why}. This call was not stored. "
                f"The {self.calls} append calls this process committed before are "
                f"{self._fate()}; call `close()` on the engine before appending "
                "again.",
                path=self.root or self.path,
                shard=self.path,
            )

    def orphan_mergeable(self) -> bool:
        """Whether this open shard's file was deleted while its root stayed the same
        file: its committed calls are still readable through the open handle, and a
        merge into that root takes them from there."""
        return (
            not self.closed
            and self.root is not None
            and self.root_ident is not None
            and _ident(self.path) != self._ident
            and _ident(self.root) == self.root_ident
        )

    def _fate(self) -> str:
        if self.orphan_mergeable():
            return "still readable by this process and merged by its next read"
        return "in the store wherever it was moved (a move merges first), or lost with it"

    def append(self, records: list[Record]) -> None:
        """Commit one append call (or queue it while commits are deferred).

        :raises ShardLostError: the shard file or the root was removed or replaced.
        """
        with self._tlock:
            self.verify()
            if self._defer:
                self._pending.append(records)
                self._pending_bytes += sum(
                    r.rows.nbytes for r in records if r.rows is not None
                )
                if self._pending_bytes >= BUFFER_BYTES:
                    self._commit_pending()
            else:
                self._commit([records])

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        """Queue calls in memory and commit them together on exit (a write scope)."""
        with self._tlock:
            self._defer += 1
        try:
            yield
        finally:
            with self._tlock:
                self._defer -= 1
                if not self._defer:
                    self._commit_pending()

    def commit_pending(self) -> None:
        with self._tlock:
            self._commit_pending()

    def _commit_pending(self) -> None:
        if self._pending:
            self.verify()
            calls, self._pending, self._pending_bytes = self._pending, [], 0
            self._commit(calls)

    def _commit(self, calls: list[list[Record]]) -> None:
        if self.failed is not None:
            raise self._failed_error(earlier=True)
        try:
            self._write_calls(calls)
        except BaseException as e:
            # HDF5's state after a failed write or flush (a full disk, an I/O error,
            # an interrupt) is unknown: a later flush could write rows behind a hole.
            # The shard takes nothing more; what it committed before stays valid
            # (every record has a checksum), and the engine starts a fresh shard.
            # (Kept as text: an exception would tie this writer's HDF5 objects into
            # a reference cycle.)
            code = getattr(e, "errno", None)
            if code is None:  # h5py's RuntimeErrors carry the errno in their text
                found = re.search(r"errno = (\d+)", str(e))
                code = int(found.group(1)) if found else None
            self.failed, self._failed_errno = f"{type(e).__name__}: {e}", code
            self._abandon()
            if isinstance(e, (OSError, RuntimeError)) and not isinstance(e, StoreError):
                raise self._failed_error() from None
            raise

    def _abandon(self) -> None:
        """Close this shard after a failed write without writing to it again.

        HDF5 flushes its dirty metadata and chunks when the file closes; after a
        failed write that flush fails too (on a disk still full), and HDF5 is left
        in a state in which collecting the file's objects, or the interpreter's exit,
        crashes (SIGSEGV). So the file's descriptor is first pointed at an anonymous
        in-memory file: the close succeeds, writes nothing to the shard, and the shard
        on disk keeps exactly what its commit record covers. Its sidecars are
        released: it is a dead writer's shard, merged by the next merge."""
        with contextlib.suppress(Exception):
            fd = self._file.id.get_vfd_handle()
            if isinstance(fd, int):
                sink = _scratch_fd()
                if sink is not None:
                    os.ftruncate(sink, os.fstat(fd).st_size)
                    os.dup2(sink, fd)
                    os.close(sink)
        self._pending, self._pending_bytes = [], 0
        with contextlib.suppress(Exception):
            self._file.close()
        self.closed = True
        self.lock.close()
        if self._alive is not None:
            self._alive.close()
            self._alive = None

    def _failed_error(self, earlier: bool = False) -> StoreIOError:
        full = self._failed_errno in (errno.ENOSPC, errno.EDQUOT)
        cls = DiskFullError if full else StoreIOError
        when = "failed earlier" if earlier else "failed"
        return cls(
            f"Appending to the shard '{self.path}' {when} "
            f"({'the disk is full' if full else 'an I/O error'}: {self.failed}). "
            f"This call was not stored. The shard takes no more appends; the "
            f"{self.calls_committed} append calls it committed before are kept in it "
            "(checksummed) and merged by the next merge, as a dead writer's. The next "
            "append starts a new shard.",
            path=self.path,
        )

    def _write_calls(self, calls: list[list[Record]]) -> None:
        # Everything happens under the shard's lock so that a consolidator, which reads
        # under the shared lock, only ever sees a flushed, consistent file.
        with self.lock.exclusive():
            log_rows = []
            for records in calls:
                self._seq += 1
                for r in records:
                    sid = self._stream_id(r)
                    start = -1
                    if r.rows is not None:
                        start = self._lengths.get(sid, 0)
                        append_rows(self._data[sid], start, r.rows)
                        self._lengths[sid] = start + r.nrows
                    head = (self._seq, sid, r.key0, r.key1, start, r.nrows)
                    log_rows.append((*head, record_crc(head, r.rows)))
            n = self.committed
            append_rows(
                self._log,
                n,
                np.asarray(log_rows, dtype=np.int64).reshape(-1, LOG_COLUMNS),
            )
            self._file.flush()
            os.pwrite(self.lock._file().fileno(), _COUNT.pack(n + len(log_rows)), 0)
            self.committed = n + len(log_rows)
            self.calls_committed = self._seq

    def _stream_id(self, r: Record) -> int:
        # One flat dataset per stream *and* row layout: rows of another dtype or shape
        # (a column another process introduced differently) get their own dataset, and
        # the merge decides what to do with them.
        layout = None if r.rows is None else (r.rows.dtype.str, r.rows.shape[1:])
        sid = self._streams.get((r.stream, layout))
        if sid is None:
            sid = len(self._streams)
            self._streams[(r.stream, layout)] = sid
            self._streams_ds.resize(sid + 1, axis=0)
            self._streams_ds[sid] = stream_name(r.stream)
            if r.rows is not None:
                rows = r.rows
                kw: dict[str, Any] = {}
                if rows.dtype.kind in "OUS":
                    dtype: Any = _STR
                else:
                    dtype = rows.dtype
                    # 128 KiB HDF5 chunks: every commit flushes the partly filled
                    # last chunk whole, so 1 MiB chunks cost 17% more per append.
                    kw["chunks"] = (
                        max(
                            1,
                            min(65536, SHARD_CHUNK_BYTES // max(1, rows[:1].nbytes or 8)),
                        ),
                        *rows.shape[1:],
                    )
                self._data[sid] = self._file.create_dataset(
                    f"s/{sid}",
                    (0, *rows.shape[1:]),
                    dtype=dtype,
                    maxshape=(None, *rows.shape[1:]),
                    **kw,
                )
        return sid

    # ------------------------------------------------------------------------ reads
    def read_calls(self, start: int) -> tuple[list[Call], int]:
        """Committed calls from log row ``start`` on (for consolidation in-process)."""
        with self._tlock:
            return read_calls(self._file, start, self.committed)

    @property
    def calls(self) -> int:
        """The number of append calls committed to this shard."""
        return self.calls_committed

    # ------------------------------------------------------------------------ close
    def close(self, delete: bool = False) -> None:
        """Commit what is queued, close the file and release the sidecars (idempotent;
        the sidecars are released even when closing the file fails)."""
        with self._tlock:
            if self.closed:
                return
            with contextlib.suppress(Exception):
                self._commit_pending()
            with contextlib.suppress(Exception):  # a copy of the commit record, so the
                self._committed_ds[0] = self.committed  # shard file describes itself
            try:
                self._file.close()
            finally:
                self.closed = True
                if delete:
                    remove_shard(self.path)
                    with contextlib.suppress(OSError):  # the folder goes with its
                        os.rmdir(os.path.dirname(self.path))  # last shard
                self.lock.close()
                if self._alive is not None:
                    self._alive.close()
                    self._alive = None


def _scratch_fd() -> int | None:
    """A descriptor of an anonymous file that takes writes without using the disk."""
    with contextlib.suppress(OSError, AttributeError):
        return os.memfd_create("bsb-store-abandoned-shard")
    with contextlib.suppress(OSError):
        return os.open(os.devnull, os.O_RDWR)
    return None


def _ident(path: str) -> tuple[int, int] | None:
    """(device, inode) of ``path``, None when there is no file."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino


def check_shard_format(f: h5py.File) -> bool:
    """Whether ``f`` is a shard this bsb-store reads (format :data:`SHARD_FORMAT`).

    Returns ``False`` for a file without the ``bsb_store_shard`` attribute that holds
    nothing but shard objects: a shard torn at its first flush (its writer was killed
    while starting), which committed nothing.

    :raises FormatVersionError: a shard of a newer format (written by a newer
        bsb-store); its data must not be merged by this one.
    :raises FormatError: not a shard (a foreign file, or a format attribute that is
        not a known version).
    """
    where = f.filename
    try:
        version = f.attrs.get("bsb_store_shard")
    except (OSError, KeyError, RuntimeError) as e:
        raise FormatError(
            f"Shard '{where}': its format attribute 'bsb_store_shard' cannot be read "
            f"({e}).",
            path=where,
        ) from e
    if version is None:
        if set(f.keys()) <= SHARD_OBJECTS:
            return False
        raise FormatError(
            f"'{where}' is not a bsb-store shard: it has no 'bsb_store_shard' format "
            f"attribute and holds {sorted(f.keys())[:5]}.",
            path=where,
        )
    if isinstance(version, (bool, np.bool_)) or not isinstance(
        version, (int, np.integer)
    ):
        raise FormatError(
            f"Shard '{where}' has the format attribute bsb_store_shard={version!r}, "
            f"expected the integer {SHARD_FORMAT}: it is not a bsb-store shard.",
            path=where,
            version=repr(version),
        )
    number = int(version)
    if number > max(SHARD_FORMATS):
        raise FormatVersionError(
            f"Shard '{where}' has shard format version {number}; this bsb-store reads "
            f"version {SHARD_FORMAT} (the shard was written by a newer bsb-store; "
            "upgrade to merge it).",
            path=where,
            version=number,
        )
    if number not in SHARD_FORMATS:
        raise FormatError(
            f"Shard '{where}' has shard format version {number}; this bsb-store reads "
            f"version {SHARD_FORMAT}: it is not a bsb-store shard.",
            path=where,
            version=number,
        )
    return True


def read_calls(
    f: h5py.File, start: int, committed: int | None = None
) -> tuple[list[Call], int]:
    """Decode the committed log rows ``[start, committed)`` of an open shard into calls.

    Returns the calls and the committed row count the read stopped at.

    :raises FormatVersionError: the shard is of a newer format.
    :raises FormatError: the file is not a shard, or its committed rows do not decode
        (stream names that are not JSON lists, log rows naming streams or rows that
        do not exist).
    """
    if not check_shard_format(f):
        raise FormatError(
            f"Shard '{f.filename}' is incomplete: its writer died before the shard's "
            "first flush (no format attribute).",
            path=f.filename,
        )
    try:
        return _decode_calls(f, start, committed)
    except ShardChecksumError:
        raise
    except (ValueError, TypeError, IndexError, KeyError, OSError) as e:
        raise FormatError(
            f"Shard '{f.filename}': the committed log rows from {start} on cannot be "
            f"decoded ({type(e).__name__}: {e}).",
            path=f.filename,
        ) from e


def _decode_calls(
    f: h5py.File, start: int, committed: int | None
) -> tuple[list[Call], int]:
    if committed is None:
        committed = int(f["committed"][0])
    committed = min(committed, f["log"].shape[0])
    if committed <= start:
        return [], committed
    log = f["log"][start:committed]
    # Format 2 logs carry each record's CRC-32 (format 1: none, nothing to verify).
    crcs = log[:, _HEADER] if log.shape[1] > _HEADER else None
    log = log[:, :_HEADER]
    names = f["streams"][: int(log[:, 1].max()) + 1]
    streams = [
        tuple(json.loads(n.decode() if isinstance(n, bytes) else n)) for n in names
    ]
    # Read each stream's needed range in one go, then slice per record.
    spans: dict[int, list[int]] = defaultdict(lambda: [2**62, -1])
    for _, sid, _, _, s, n in log:
        if s >= 0 and n:
            span = spans[int(sid)]
            span[0], span[1] = min(span[0], int(s)), max(span[1], int(s + n))
    blocks = {sid: (lo, f[f"s/{sid}"][lo:hi]) for sid, (lo, hi) in spans.items()}
    calls: dict[int, Call] = {}
    for i, (seq, sid, k0, k1, s, n) in enumerate(log):
        header = (seq, sid, k0, k1, s, n)
        sid, s, n = int(sid), int(s), int(n)
        rows = None
        if s >= 0:
            if n and sid in blocks:
                lo, data = blocks[sid]
                rows = data[s - lo : s - lo + n]
            else:
                ds = f[f"s/{sid}"]
                rows = np.empty((0, *ds.shape[1:]), dtype=ds.dtype)
            if rows.dtype.kind == "O":
                rows = np.array(
                    [x.decode() if isinstance(x, bytes) else x for x in rows],
                    dtype=object,
                )
        if crcs is not None and record_crc(header, rows) != int(crcs[i]):
            raise ShardChecksumError(
                f"Shard '{f.filename}': committed log record {start + i} (append "
                f"call {int(seq)}, stream {list(streams[sid])}, chunk {int(k0)}) does "
                "not match its checksum: its data or log row was torn or zeroed on "
                "disk after it was committed. Nothing of this shard is merged; it is "
                "kept as it is. `bsb-store check` reports it.",
                path=f.filename,
                record=start + i,
            )
        call = calls.setdefault(int(seq), Call(int(seq)))
        call.records.append(Record(streams[sid], int(k0), int(k1), rows, n))
    return [calls[k] for k in sorted(calls)], committed


def remove_shard(path: str) -> None:
    """Delete a shard file and its sidecars."""
    for p in (path, *shard_paths(path)):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(p)


def list_shards(shard_dir: str) -> list[str]:
    """Paths of the shard files in ``shard_dir``, sorted by name."""
    try:
        names = sorted(n for n in os.listdir(shard_dir) if n.endswith(".h5"))
    except FileNotFoundError:
        return []
    return [os.path.join(shard_dir, n) for n in names]


def writer_alive(shard_h5: str) -> bool:
    """Whether the process that owns this shard still runs (it holds ``.alive``)."""
    _, alive = shard_paths(shard_h5)
    if not os.path.exists(alive):
        return False
    fh = try_exclusive(alive)
    if fh is None:
        return True
    fh.close()
    return False
