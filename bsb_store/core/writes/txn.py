"""Transactions on the root file: collect the publishing operations of one change.

A change to the root is written in two steps. *Staging* writes data where no reader
looks: rows past the logical length of a column (readers only read up to the counts
kept in the index tables), or new objects under ``/store/staging``. *Publishing* makes
it visible with a short list of absolute operations (resizes and writes, attribute
sets, deletions, and ``replace``: move a staged object into place), collected by a
:class:`Transaction` and applied by :meth:`Transaction.commit`.

Atomicity does not come from here: every transaction runs inside a write session of
the root opened through :class:`~bsb_store.core.writes.undo.UndoFile`, whose undo log
undoes the whole session, byte for byte, if its process dies before the session ends.
(A journal written through HDF5 itself cannot do that: HDF5 flushes are not atomic, and
a kill inside one tears the very structures the journal lives in.)

Roots written by bsb-store 0.1 may still hold a journal of that version's protocol
(``/store/journal``: the operations as JSON plus their payloads, with a completion
mark); :func:`recover` redoes a complete one and discards an incomplete one, and
:func:`write_journal` writes that format (tools and tests use it to make such a root).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

import h5py
import numpy as np

from .rows import write_rows

JOURNAL = "store/journal"
STAGING = "store/staging"


class Transaction:
    """Collects the publish operations of one change to an open root file."""

    def __init__(
        self, file: h5py.File, reserve: Callable[[int, int, str], None] | None = None
    ):
        self.file = file
        self._ops: list[dict[str, Any]] = []
        self._payloads: list[np.ndarray] = []
        #: Scratch space for appliers to keep state across calls in one transaction.
        self.memo: dict[Any, Any] = {}
        #: The write session's free-space check (``UndoFile.reserve``), if any.
        self._reserve = reserve
        self._prepaid = 0
        self._operation = "staging data"  # what the reserve was made for

    # ------------------------------------------------------------------ free space
    def reserve(self, nbytes: int, groups: int = 0, operation: str = "a write") -> None:
        """Check for free space before writing about ``nbytes`` data bytes into
        ``groups`` (set, chunk) groups (a merge announces everything it will write);
        the staging and publishing calls that follow draw on it before they check
        again.

        :raises DiskFullError: not enough free space; nothing was written for it.
        """
        if self._reserve is not None:
            self._reserve(nbytes, groups, operation)
            self._prepaid += nbytes
            self._operation = operation

    def _use(self, nbytes: int) -> None:
        """Account for ``nbytes`` about to be written (checked past the reserve)."""
        if self._reserve is None:
            return
        covered = min(nbytes, self._prepaid)
        self._prepaid -= covered
        # Also raises once a write of the session failed: nothing more is written.
        self._reserve(nbytes - covered, 0, self._operation)

    # --------------------------------------------------------------------- staging
    def staging_path(self) -> str:
        """A fresh path under the staging group for a new object."""
        return f"{STAGING}/{uuid.uuid4().hex}"

    def stage_rows(self, ds: h5py.Dataset, start: int, rows: np.ndarray) -> None:
        """Write ``rows`` at ``start`` (past the logical end), growing the dataset if
        needed. Never shrinks: a later publish sets the final length."""
        rows = np.asarray(rows)
        self._use(payload_bytes(rows))
        write_rows(ds, start, rows)

    # --------------------------------------------------------------------- publish
    @property
    def empty(self) -> bool:
        return not self._ops

    def resize(self, path: str, n: int) -> None:
        self._ops.append({"op": "resize", "path": path, "n": int(n)})

    def write(self, path: str, start: int, values: Any) -> None:
        """Write ``values`` into dataset ``path`` at row ``start`` (growing it if short)."""
        arr = np.asarray(values)
        self._use(payload_bytes(arr))
        self._ops.append(
            {"op": "write", "path": path, "start": int(start), "p": len(self._payloads)}
        )
        self._payloads.append(arr)

    def set_attr(self, path: str, name: str, value: Any) -> None:
        """Set an attribute; ``value`` must be JSON-able (stored as-is in the journal)."""
        self._ops.append({"op": "attr", "path": path, "name": name, "value": value})

    def delete(self, path: str) -> None:
        self._ops.append({"op": "delete", "path": path})

    def replace(self, staged: str, path: str) -> None:
        """Move a staged object to ``path``, replacing whatever is there."""
        self._ops.append({"op": "replace", "src": staged, "dst": path})

    def commit(self) -> None:
        """Apply and clear the publish operations (a no-op when there are none). The
        write session's undo log makes them, and everything else the session did, all
        or nothing; its close flushes them."""
        if not self._ops:
            return
        _apply(self.file, self._ops, self._payloads)
        if STAGING in self.file and not len(self.file[STAGING]):
            del self.file[STAGING]
        self._ops, self._payloads = [], []


def payload_bytes(rows: np.ndarray | None) -> int:
    """Bytes ``rows`` take in the file (strings counted by their length)."""
    if rows is None:
        return 0
    if rows.dtype.kind == "O":
        return sum(len(x) + 16 if isinstance(x, (str, bytes)) else 16 for x in rows.flat)
    return int(rows.nbytes)


def write_journal(f: h5py.File, ops: list[dict], payloads: list[np.ndarray]) -> None:
    """Write ``ops`` as a complete journal in the bsb-store 0.1 format (see the module
    docstring)."""
    if JOURNAL in f:
        del f[JOURNAL]
    g = f.create_group(JOURNAL)
    for i, p in enumerate(payloads):
        if p.dtype.kind in "OU":
            g.create_dataset(f"p{i}", data=p.astype(object), dtype=h5py.string_dtype())
        else:
            g.create_dataset(f"p{i}", data=p)
    g.attrs["ops"] = json.dumps(ops)
    g.attrs["complete"] = 1


def _apply(f: h5py.File, ops: list[dict], payloads: list[np.ndarray]) -> None:
    for op in ops:
        kind = op["op"]
        if kind == "resize":
            f[op["path"]].resize(op["n"], axis=0)
        elif kind == "write":
            ds = f[op["path"]]
            values = payloads[op["p"]]
            start = op["start"]
            if ds.ndim == 0:
                ds[()] = values
                continue
            end = start + len(values)
            if ds.shape[0] < end:
                ds.resize(end, axis=0)
            if len(values):
                ds[start:end] = values
        elif kind == "attr":
            obj = f[op["path"]]
            value = op["value"]
            obj.attrs[op["name"]] = (
                np.asarray(value) if isinstance(value, list) else value
            )
        elif kind == "delete":
            if op["path"] in f:
                del f[op["path"]]
        elif kind == "replace":
            src, dst = op["src"], op["dst"]
            if src in f:
                if dst in f:
                    del f[dst]
                parent = dst.rsplit("/", 1)[0] if "/" in dst else ""
                if parent:
                    f.require_group(parent)
                f.move(src, dst)
        else:  # pragma: no cover - journals are only written by this module
            raise ValueError(f"Unknown journal operation {kind!r}")


def has_journal(f: h5py.File) -> bool:
    return JOURNAL in f


def recover(f: h5py.File) -> str | None:
    """Finish or discard an interrupted transaction of a root open for writing.

    Returns ``"redone"``, ``"discarded"`` or None when there was nothing to do; also
    drops leftover staged objects.
    """
    outcome = None
    if JOURNAL in f:
        g = f[JOURNAL]
        if g.attrs.get("complete", 0):
            ops = json.loads(g.attrs["ops"])
            payloads = []
            for i in range(sum(1 for o in ops if o["op"] == "write")):
                ds = g[f"p{i}"]
                data = ds[()]
                if h5py.check_string_dtype(ds.dtype) is not None:
                    data = np.asarray(ds.asstr()[()], dtype=object)
                payloads.append(data)
            _apply(f, ops, payloads)
            outcome = "redone"
        else:
            outcome = "discarded"
        del f[JOURNAL]
    if STAGING in f:
        del f[STAGING]
        outcome = outcome or "discarded"
    if outcome:
        f.flush()
    return outcome
