"""The one JSON codec for user metadata (file meta, morphology meta).

JSON holds None, bool, int, float, str, lists and str-keyed dicts; numpy arrays (and,
if asked, numpy scalars) are written as ``{"__ndarray__": values, "dtype": str,
"shape": [...]}`` so they come back with their dtype and shape. Anything JSON cannot
hold exactly (sets, bytes, complex numbers, objects, floats wider than 64 bits, non-str
keys, a ``"__ndarray__"`` key, a container that contains itself) is refused with a
message that says where it is, before anything is written.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from ...exceptions import FormatError, InvalidInputError

ND = "__ndarray__"
_KINDS = "biufU"  # numpy kinds JSON holds exactly


def encode(meta: Any, what: str, *, numpy_scalars: bool) -> str:
    """JSON text of the mapping ``meta`` (None: empty). ``numpy_scalars`` keeps numpy
    scalars as numpy scalars on the way back; otherwise they become Python scalars."""
    if meta is None:
        meta = {}
    if not isinstance(meta, Mapping):
        raise InvalidInputError(
            f"{what} must be a mapping with str keys, got {type(meta).__name__} {meta!r}.",
            meta=meta,
        )
    return json.dumps(_jsonable(meta, "meta", what, numpy_scalars, set()))


def decode(text: str | bytes, what: str) -> dict[str, Any]:
    """The mapping :func:`encode` wrote (numpy arrays and scalars come back as they
    went in)."""
    if isinstance(text, bytes):
        text = text.decode("utf-8")
    try:
        meta = json.loads(text, object_hook=_unjson)
    except (ValueError, TypeError) as e:
        raise FormatError(f"{what} is not valid JSON: {e}") from e
    if not isinstance(meta, dict):
        raise FormatError(f"{what} must be a JSON object, got {meta!r}.")
    return meta


def _jsonable(value: Any, where: str, what: str, numpy_scalars: bool, stack: set[int]):
    if isinstance(value, np.generic):
        if numpy_scalars:
            return _array(value, where, what)
        _array(value, where, what)  # validates the kind
        return value.item()
    if value is None or isinstance(value, (bool, str, int, float)):
        return value
    if isinstance(value, np.ndarray):
        return _array(value, where, what)
    if isinstance(value, (Mapping, list, tuple)):
        if id(value) in stack:
            raise InvalidInputError(f"{what} at {where} contains itself.", where=where)
        stack.add(id(value))
        try:
            if isinstance(value, Mapping):
                out = {}
                for k, v in value.items():
                    if not isinstance(k, str) or k == ND:
                        raise InvalidInputError(
                            f"{what} key {k!r} at {where} is not allowed: keys must be "
                            f"str other than {ND!r}.",
                            where=where,
                        )
                    out[k] = _jsonable(v, f"{where}[{k!r}]", what, numpy_scalars, stack)
                return out
            return [
                _jsonable(v, f"{where}[{i}]", what, numpy_scalars, stack)
                for i, v in enumerate(value)
            ]
        finally:
            stack.discard(id(value))
    raise InvalidInputError(
        f"Cannot store {type(value).__name__} value {value!r} at {where} in {what}: "
        "expected None, bool, int, float, str, list, dict or a numpy array of "
        "booleans, numbers or str.",
        where=where,
    )


def _array(value: np.ndarray | np.generic, where: str, what: str) -> dict[str, Any]:
    arr = np.asarray(value)
    if arr.dtype.kind not in _KINDS or (arr.dtype.kind == "f" and arr.itemsize > 8):
        raise InvalidInputError(
            f"Cannot store the numpy {arr.dtype} value at {where} in {what}: expected "
            "booleans, integers, floats (<= 64 bit) or str.",
            where=where,
        )
    out = {ND: arr.tolist(), "dtype": arr.dtype.str, "shape": list(arr.shape)}
    if isinstance(value, np.generic):
        out["scalar"] = True
    return out


def _unjson(d: dict[str, Any]) -> Any:
    if ND not in d:
        return d
    arr = np.array(d[ND], dtype=np.dtype(d["dtype"])).reshape(d["shape"])
    return arr[()] if d.get("scalar") else arr


def meta_equal(a: Any, b: Any) -> bool:
    """Deep equality of meta values: arrays by dtype, shape and values (NaN == NaN)."""
    if isinstance(a, (np.ndarray, np.generic)) or isinstance(b, (np.ndarray, np.generic)):
        a_arr, b_arr = np.asarray(a), np.asarray(b)
        nan = a_arr.dtype.kind in "fc" and b_arr.dtype.kind in "fc"
        return (
            type(a) is type(b)
            and a_arr.dtype == b_arr.dtype
            and a_arr.shape == b_arr.shape
            and bool(np.array_equal(a_arr, b_arr, equal_nan=nan))
        )
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(meta_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(meta_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return type(a) is type(b) and a == b
