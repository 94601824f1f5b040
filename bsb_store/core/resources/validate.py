"""``parse_*`` helpers: validate input at the API edge, with messages that show what
was given and what was expected."""

from __future__ import annotations

from typing import Any

import numpy as np

from ...exceptions import DtypeError, InvalidInputError, ShapeError


def parse_name(obj: Any, what: str) -> str:
    """A set, key or file name: a non-empty str (or an object with ``.name``) that can
    be an HDF5 link name."""
    name = getattr(obj, "name", obj)
    if (
        not isinstance(name, str)
        or not name
        or "/" in name
        or "\0" in name
        or name in (".", "..")
    ):
        raise InvalidInputError(
            f"Invalid {what} name {name!r}: expected a non-empty string without '/'.",
            name=name,
        )
    try:
        name.encode("utf-8")
    except UnicodeEncodeError as e:
        raise InvalidInputError(
            f"Invalid {what} name {name!r}: it cannot be encoded as UTF-8 ({e.reason}).",
            name=name,
        ) from None
    return name


def as_float_rows(value: Any, width: int, what: str, finite: bool = False) -> np.ndarray:
    """(n, width) float64 rows; a 1-D sequence of ``width`` numbers is one row and an
    empty sequence is zero rows."""
    try:
        arr = np.asarray(value)
    except (ValueError, TypeError) as e:
        raise ShapeError(f"{what} must be an (n, {width}) array: {e}") from e
    if arr.size == 0:
        return np.empty((0, width), dtype=np.float64)
    if arr.dtype.kind not in "biuf":
        raise DtypeError(
            f"{what} must be real numbers, got dtype {arr.dtype}.", what=what
        )
    if arr.ndim == 1 and arr.shape[0] == width:
        arr = arr.reshape(1, width)
    if arr.ndim != 2 or arr.shape[1] != width:
        raise ShapeError(
            f"{what} must have shape (n, {width}), got {arr.shape}.", what=what
        )
    # Always a copy: appends may be queued (write scopes), and must not change when the
    # caller reuses its array afterwards.
    arr = np.array(arr, dtype=np.float64, copy=True)
    if finite and not np.all(np.isfinite(arr)):
        bad = np.argwhere(~np.isfinite(arr))[0]
        raise InvalidInputError(
            f"{what} must be finite: row {bad[0]} is {arr[bad[0]].tolist()}.", what=what
        )
    return arr


def as_index_rows(value: Any, bound: int, what: str) -> np.ndarray:
    """(n,) int64 indices in ``[-1, bound)`` (-1: none)."""
    arr = np.asarray(value)
    if arr.size == 0:
        return np.empty(0, dtype=np.int64)
    if arr.dtype.kind not in "iu":
        if arr.dtype.kind == "f" and np.all(np.mod(arr, 1) == 0):
            arr = arr.astype(np.int64)
        else:
            raise DtypeError(f"{what} indices must be integers, got {arr.dtype}.")
    arr = arr.reshape(-1).astype(np.int64)
    if arr.min() < -1 or arr.max() >= bound:
        raise InvalidInputError(
            f"{what} indices must lie in [-1, {bound}) (the names given), got values "
            f"from {arr.min()} to {arr.max()}.",
            what=what,
        )
    return arr


def as_locations(value: Any, what: str) -> np.ndarray:
    """(n, 3) int64 ``[cell, branch, point]`` rows; 1-D cell ids are padded with -1."""
    arr = np.asarray(value)
    if arr.size == 0:
        return np.empty((0, 3), dtype=np.int64)
    if arr.dtype.kind not in "iu":
        if arr.dtype.kind == "f" and np.all(np.mod(arr, 1) == 0):
            arr = arr.astype(np.int64)
        else:
            raise DtypeError(f"{what} must be integers, got dtype {arr.dtype}.")
    if arr.ndim == 1:
        arr = np.column_stack([arr, np.full((len(arr), 2), -1)])
    if arr.ndim != 2 or arr.shape[1] != 3:
        raise ShapeError(f"{what} must have shape (n, 3) or (n,), got {arr.shape}.")
    return arr.astype(np.int64, copy=False)
