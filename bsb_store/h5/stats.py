"""Streaming dataset statistics with correct, count-weighted merges.

Every stored or appended dataset carries its minimum, maximum, mean, a finiteness flag and
a complex flag as attributes, so viewers get colour-bar ranges without reading the data.
Unlike TVB, merging two partial statistics weights the means by their element counts, and
appending after a reopen merges with the statistics already on disk.

Conventions: minimum and maximum ignore NaN (a NaN anywhere clears ``is_finite``; an
all-NaN dataset has NaN extremes); the mean is the plain arithmetic mean, so NaN or
opposite infinities make it NaN exactly as :func:`numpy.mean` would. Text and other
non-numeric arrays only keep a count.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import h5py
import numpy as np

from .encoding import Profile, decode_bool

#: Elements read per block when statistics have to be recomputed from the data.
SCAN_BLOCK_ELEMENTS = 1 << 20


@dataclass(frozen=True)
class Statistics:
    """Summary of a dataset's values (TVB calls this ``DataSetMetaData``).

    ``minimum``/``maximum`` keep the dataset's dtype; ``mean`` is a Python ``float``
    (``complex`` for complex data). They are ``None`` for empty or non-numeric data.
    """

    count: int = 0
    minimum: Any = None
    maximum: Any = None
    mean: float | complex | None = None
    is_finite: bool = True
    has_complex: bool = False

    @property
    def min(self) -> Any:
        """Alias of :attr:`minimum` (TVB's name)."""
        return self.minimum

    @property
    def max(self) -> Any:
        """Alias of :attr:`maximum` (TVB's name)."""
        return self.maximum

    @classmethod
    def from_array(cls, data: Any) -> Statistics:
        """Statistics of all values of ``data``."""
        a = np.asarray(data)
        if a.dtype.kind not in "biufc":
            return cls(count=int(a.size))
        if a.size == 0:
            return cls(count=0)
        n = int(a.size)
        if a.dtype.kind == "b":
            return cls(n, np.bool_(a.min()), np.bool_(a.max()), float(a.mean()))
        if a.dtype.kind in "iu":
            return cls(n, a.min(), a.max(), float(a.mean(dtype=np.float64)))
        with np.errstate(invalid="ignore", over="ignore"):
            nan = np.isnan(a)
            if nan.all():
                lo = hi = a.dtype.type(np.nan)
            else:
                valid = a[~nan] if nan.any() else a
                lo, hi = valid.min(), valid.max()
            finite = bool(np.isfinite(a).all())
            if a.dtype.kind == "c":
                mean: float | complex = complex(a.mean(dtype=np.complex128))
                has_complex = bool(np.any(a.imag != 0))
            else:
                mean = float(a.mean(dtype=np.float64))
                has_complex = False
        return cls(n, lo, hi, mean, finite, has_complex)

    def merge(self, other: Statistics) -> Statistics:
        """Statistics of the concatenation of the data behind ``self`` and ``other``."""
        if other.count == 0 and other.mean is None:
            return self
        if self.count == 0 and self.mean is None:
            return other
        n = self.count + other.count
        if self.mean is None or other.mean is None:
            return Statistics(n, is_finite=self.is_finite and other.is_finite)
        # Plain Python arithmetic keeps inf - inf = nan silent, as numpy.mean of the
        # concatenation would give. If the weighted sum overflows, weights <= 1 avoid it.
        mean = (self.mean * self.count + other.mean * other.count) / n
        if _is_overflow(mean, self.mean, other.mean):
            mean = self.mean * (self.count / n) + other.mean * (other.count / n)
        return Statistics(
            n,
            _extreme(self.minimum, other.minimum, np.min),
            _extreme(self.maximum, other.maximum, np.max),
            mean,
            self.is_finite and other.is_finite,
            self.has_complex or other.has_complex,
        )

    def to_dict(self) -> dict[str, Any]:
        """The statistics under TVB's key names (``Minimum``, ``Maximum``, ...)."""
        return {
            "Minimum": self.minimum,
            "Maximum": self.maximum,
            "Mean": self.mean,
            "IsFinite": self.is_finite,
            "HasComplex": self.has_complex,
        }


def _is_overflow(result: complex, a: complex, b: complex) -> bool:
    return not _finite(result) and _finite(a) and _finite(b)


def _finite(x: complex) -> bool:
    return bool(np.isfinite(x))


def _is_nan(x: Any) -> bool:
    return bool(x != x)


def _extreme(a: Any, b: Any, pick: Any) -> Any:
    if a is None or b is None:
        return a if b is None else b
    if _is_nan(a):
        return b
    if _is_nan(b):
        return a
    return pick(np.array([a, b]))


def write_statistics(
    attrs: h5py.AttributeManager, stats: Statistics, profile: Profile, dtype: np.dtype
) -> None:
    """Write ``stats`` as attributes of a dataset, following ``profile``."""
    keys = profile.stat_keys

    def put(stat: str, value: Any) -> None:
        key = profile.key(keys[stat])
        if value is not None:
            attrs[key] = value
        elif profile.empty_stat_as_text:
            attrs[key] = ""
        elif key in attrs:
            del attrs[key]

    if profile.stats_count:
        put("count", np.int64(stats.count))
    extreme_dtype = dtype if dtype.kind in "biufc" else None
    for stat in ("minimum", "maximum"):
        value = getattr(stats, stat)
        put(stat, None if value is None else np.asarray(value, extreme_dtype)[()])
    mean = stats.mean
    if mean is not None:
        mean = np.complex128(mean) if isinstance(mean, complex) else np.float64(mean)
    put("mean", mean)
    put("is_finite", profile.encode(stats.is_finite))
    put("has_complex", profile.encode(stats.has_complex))


def read_statistics(
    attrs: Mapping[str, Any], profile: Profile, size: int
) -> Statistics | None:
    """Statistics stored on a dataset of ``size`` elements, or ``None`` if absent/stale.

    Native files record the element count the statistics describe; if it differs from
    ``size`` (data added behind our back) the statistics are stale and ``None`` is
    returned. TVB files have no count: their statistics are taken to cover the dataset.
    """
    keys = {stat: profile.key(name) for stat, name in profile.stat_keys.items()}
    if not any(keys[s] in attrs for s in ("minimum", "maximum", "mean")):
        return None
    if profile.stats_count:
        stored = attrs.get(keys["count"])
        if stored is None or int(stored) != size:
            return None

    def get(stat: str) -> Any:
        raw = attrs.get(keys[stat])
        if raw is None or (isinstance(raw, (str, bytes)) and len(raw) == 0):
            return None
        return raw

    mean = get("mean")
    if mean is not None:
        mean = complex(mean) if np.iscomplexobj(mean) else float(mean)
    finite, cplx = get("is_finite"), get("has_complex")
    return Statistics(
        count=size,
        minimum=get("minimum"),
        maximum=get("maximum"),
        mean=mean,
        is_finite=True if finite is None else decode_bool(finite),
        has_complex=False if cplx is None else decode_bool(cplx),
    )


def scan_dataset(ds: h5py.Dataset) -> Statistics:
    """Recompute a dataset's statistics by reading it in bounded blocks."""
    if ds.shape is None:
        return Statistics()
    if ds.ndim == 0:
        return Statistics.from_array(ds[()])
    row = max(1, int(np.prod(ds.shape[1:], dtype=np.int64)))
    step = max(1, SCAN_BLOCK_ELEMENTS // row)
    stats = Statistics()
    for start in range(0, ds.shape[0], step):
        stats = stats.merge(Statistics.from_array(ds[start : start + step]))
    if ds.shape[0] == 0:
        stats = Statistics(count=0)
    return stats
