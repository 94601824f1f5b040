"""Row writes on growable datasets through h5py's low-level API.

The write paths (a shard append, a merge staging rows into chunk datasets) write one
block of rows per call, many calls per second. h5py's high-level slicing
(``ds[a:b] = rows``) builds a selection object, checks shapes and broadcasts on every
call, several times the cost of the write itself for the row counts of a chunk; here
one extent change, one hyperslab and one write do the same. Strings (variable-length)
take the high-level path, which converts them.
"""

from __future__ import annotations

import h5py
import numpy as np


def write_rows(ds: h5py.Dataset, start: int, rows: np.ndarray, grow: bool = True) -> None:
    """Write ``rows`` at row ``start`` of ``ds``, first growing ``ds`` to hold them
    when ``grow`` (never shrinking it)."""
    n = len(rows)
    end = start + n
    dsid = ds.id
    if grow and dsid.shape[0] < end:
        dsid.set_extent((end, *dsid.shape[1:]))
    if not n:
        return
    if rows.dtype.kind in "OUS":
        ds[start:end] = rows
        return
    rest = rows.shape[1:]
    fspace = dsid.get_space()
    fspace.select_hyperslab((start, *(0 for _ in rest)), (n, *rest))
    mspace = h5py.h5s.create_simple((n, *rest))
    dsid.write(mspace, fspace, np.ascontiguousarray(rows, dtype=ds.dtype))


def append_rows(ds: h5py.Dataset, start: int, rows: np.ndarray) -> None:
    """Set the length of ``ds`` to ``start + len(rows)`` and write ``rows`` at
    ``start`` (``start`` is the dataset's length, which the caller tracks)."""
    dsid = ds.id
    dsid.set_extent((start + len(rows), *dsid.shape[1:]))
    write_rows(ds, start, rows, grow=False)
