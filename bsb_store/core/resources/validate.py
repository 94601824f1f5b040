"""``parse_*`` helpers: validate input at the API edge, with messages that show what
was given and what was expected."""

from __future__ import annotations

from typing import Any

import numpy as np

from ...exceptions import DtypeError, InvalidInputError, ShapeError

_INT64_MAX = int(np.iinfo(np.int64).max)
_TWO_63 = 2.0**63


def parse_name(obj: Any, what: str) -> str:
    """A set, key or file name: a non-empty str (or an object with ``.name``) that can
    be an HDF5 link name."""
    name = getattr(obj, "name", obj)
    problem = name_problem(name)
    if problem is not None:
        raise InvalidInputError(f"Invalid {what} name {name!r}: {problem}.", name=name)
    try:
        name.encode("utf-8")
    except UnicodeEncodeError as e:
        raise InvalidInputError(
            f"Invalid {what} name {name!r}: it cannot be encoded as UTF-8 ({e.reason}).",
            name=name,
        ) from None
    return name


def name_problem(name: Any) -> str | None:
    """Which rule of an HDF5 link name ``name`` breaks, said as the rule; None if none."""
    if not isinstance(name, str):
        return f"expected a string, got {type(name).__name__}"
    if not name:
        return "expected a non-empty string"
    if "/" in name:
        return "it contains '/', which separates HDF5 path components"
    if "\0" in name:
        return "it contains a NUL character, which HDF5 names cannot hold"
    if name in (".", ".."):
        return f"{name!r} is reserved: it means this or the parent group in HDF5 paths"
    return None


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


def as_int64(arr: np.ndarray, what: str, noun: str = "values") -> np.ndarray:
    """``arr`` converted to int64 without losing or changing a value.

    Integer arrays must fit int64 (unsigned values ``>= 2**63`` are refused rather than
    wrapped); float arrays must hold finite whole numbers within int64. The checks run
    before any cast, so numpy never warns and nothing is silently rounded or wrapped.

    :param arr: the array to convert (any shape).
    :param what: what the array is, for messages (e.g. ``"src_locs"``).
    :param noun: what its elements are, for messages (e.g. ``"indices"``).
    :raises DtypeError: the dtype is neither integer nor real floating point (bool,
        complex, text, objects, ...).
    :raises InvalidInputError: a value is not finite, not whole, or outside int64.
    """
    kind = arr.dtype.kind
    if kind not in "iuf":
        raise DtypeError(
            f"{what} {noun} must be integers, got dtype {arr.dtype}.",
            what=what,
            dtype=str(arr.dtype),
        )
    if kind == "i" or not arr.size:
        return arr.astype(np.int64, copy=False)
    if kind == "u":
        big = arr > _INT64_MAX
        if np.any(big):
            raise InvalidInputError(
                f"{what} {noun} must be integers that fit int64 (at most "
                f"{_INT64_MAX}), got {_first(arr, big)}.",
                what=what,
            )
        return arr.astype(np.int64)
    if arr.dtype.itemsize < 8:  # exact in float64, where 2**63 can be compared
        arr = arr.astype(np.float64)
    finite = np.isfinite(arr)
    if not np.all(finite):
        raise InvalidInputError(
            f"{what} {noun} must be finite integers, got {_first(arr, ~finite)}.",
            what=what,
        )
    # 2**63 is exact in every float type; INT64_MAX is not (it rounds up to 2**63).
    outside = (arr >= _TWO_63) | (arr < -_TWO_63)
    if np.any(outside):
        raise InvalidInputError(
            f"{what} {noun} must be integers within int64 (|x| < 2**63), got "
            f"{_first(arr, outside)}.",
            what=what,
        )
    fractional = np.mod(arr, 1) != 0
    if np.any(fractional):
        raise DtypeError(
            f"{what} {noun} must be integers, got {_first(arr, fractional)} (dtype "
            f"{arr.dtype}).",
            what=what,
            dtype=str(arr.dtype),
        )
    return arr.astype(np.int64)


def _first(arr: np.ndarray, bad: np.ndarray) -> str:
    """The first offending value of ``arr`` (where ``bad``), for messages."""
    return repr(arr[bad].reshape(-1)[0].item())


def as_index_rows(value: Any, bound: int, what: str) -> np.ndarray:
    """(n,) int64 indices in ``[-1, bound)`` (-1: none)."""
    arr = np.asarray(value)
    if arr.size == 0:
        return np.empty(0, dtype=np.int64)
    arr = as_int64(arr, what, "indices").reshape(-1)
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
    arr = as_int64(arr, what)
    if arr.ndim == 1:
        arr = np.column_stack([arr, np.full((len(arr), 2), -1, dtype=np.int64)])
    if arr.ndim != 2 or arr.shape[1] != 3:
        raise ShapeError(f"{what} must have shape (n, 3) or (n,), got {arr.shape}.")
    return arr
