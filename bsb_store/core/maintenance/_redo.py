"""The root as the redo of an interrupted transaction will leave it, without changing it.

A transaction killed after its journal was complete and before the journal was deleted
leaves a root whose structures the journal was rewriting are half-applied; the next
writable open (or ``repair``) redoes the journal and the store is exact again. ``check``
must judge the store it will be, not the half-written one, so it redoes the journal on a
copy-on-write view of the root: :class:`RedoOverlay` is a file object that reads the
root (or any readable base file object) and keeps every write in memory, page by page.
HDF5 opens it for writing through h5py's ``fileobj`` driver and :func:`recover` runs on
it as it would on the real root. Nothing reaches the disk, and memory grows only with
the pages the redo writes (the journal's small payloads and metadata), never with the
size of the root: this is only done when a complete journal exists.
"""

from __future__ import annotations

import bisect
import contextlib
import io
from collections.abc import Iterator
from typing import Any

import h5py

from ..writes.txn import recover
from ..writes.undo import PositionedFile

#: Unit of the in-memory copy of written bytes.
PAGE = 4096


class RedoOverlay(PositionedFile):
    """A writable file object over a read-only ``base``: reads see ``base`` with the
    writes made so far on top; writes (and truncations) stay in memory.

    :param base: a readable, seekable binary file object (a file opened ``"rb"``, or a
        view such as :class:`~bsb_store.core.writes.undo.RollbackView`). The overlay
        owns it and closes it on :meth:`close`.
    """

    def __init__(self, base: Any) -> None:
        self._base = base
        self._length = int(base.seek(0, io.SEEK_END))
        #: Base bytes at or past this offset read as zeros (the file was truncated).
        self._limit = self._length
        self._pages: dict[int, bytearray] = {}
        self._order: list[int] = []  # sorted page numbers held in ``_pages``
        self._pos = 0

    # ------------------------------------------------------------ file object API
    def writable(self) -> bool:
        return True

    def _size(self) -> int:
        return self._length

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        start = self._pos
        end = min(start + len(view), self._length)
        pos = start
        while pos < end:
            i = pos // PAGE
            page = self._pages.get(i)
            if page is not None:
                lo, hi = pos - i * PAGE, min(PAGE, end - i * PAGE)
                view[pos - start : pos - start + hi - lo] = page[lo:hi]
                pos += hi - lo
                continue
            # A run of pages never written: one read of the base.
            k = bisect.bisect_right(self._order, i)
            stop = end if k == len(self._order) else min(end, self._order[k] * PAGE)
            view[pos - start : stop - start] = self._read_base(pos, stop - pos)
            pos = stop
        n = max(0, end - start)
        self._pos = start + n
        return n

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        pos, done = self._pos, 0
        while done < len(view):
            i = pos // PAGE
            page = self._page(i)
            lo = pos - i * PAGE
            k = min(PAGE - lo, len(view) - done)
            page[lo : lo + k] = view[done : done + k]
            pos += k
            done += k
        self._length = max(self._length, pos)
        self._pos = pos
        return done

    def truncate(self, size: int | None = None) -> int:
        size = self._pos if size is None else int(size)
        if size < self._length:
            self._limit = min(self._limit, size)
            cut = size // PAGE
            for i in [i for i in self._order if i > cut]:
                del self._pages[i]
            self._order = [i for i in self._order if i <= cut]
            if cut in self._pages:
                page = self._pages[cut]
                page[size - cut * PAGE :] = bytes(PAGE - (size - cut * PAGE))
        self._length = size
        return size

    def flush(self) -> None:
        """Nothing to do: writes only ever reach memory."""

    def close(self) -> None:
        if not self.closed:
            with contextlib.suppress(OSError):
                self._base.close()
            self._pages.clear()
            self._order.clear()
        super().close()

    # ---------------------------------------------------------------- internals
    def _read_base(self, offset: int, n: int) -> bytes:
        """``n`` bytes of the base from ``offset`` (zeros past its end or limit)."""
        avail = max(0, min(n, self._limit - offset))
        data = b""
        if avail:
            self._base.seek(offset)
            data = self._base.read(avail) or b""
        return data + bytes(n - len(data)) if len(data) < n else data

    def _page(self, i: int) -> bytearray:
        page = self._pages.get(i)
        if page is None:
            page = self._pages[i] = bytearray(self._read_base(i * PAGE, PAGE))
            bisect.insort(self._order, i)
        return page


class RedoFailed(Exception):
    """Redoing the journal in memory failed: the next writable open would fail too."""


@contextlib.contextmanager
def redone(base: Any) -> Iterator[h5py.File]:
    """The root in ``base`` opened with its interrupted transaction redone (or its
    incomplete journal discarded) in memory, exactly as :func:`recover` does it on the
    next writable open; the file on disk is never written.

    :param base: a readable, seekable binary file object of the root (closed on exit).
    :raises RedoFailed: HDF5 cannot open the root this way, or the redo raises (the
        message says why); errors of the body pass through unchanged.
    """
    overlay = RedoOverlay(base)
    try:
        try:
            f = h5py.File(overlay, "r+")
        except Exception as e:
            raise RedoFailed(f"{type(e).__name__}: {e}") from e
        try:
            try:
                recover(f)
            except Exception as e:
                raise RedoFailed(f"{type(e).__name__}: {e}") from e
            yield f
        finally:
            with contextlib.suppress(Exception):
                f.close()
    finally:
        overlay.close()
