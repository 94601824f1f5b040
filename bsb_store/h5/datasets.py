"""Array accessors: :class:`DataSet` (whole, sliced and appended arrays) and
:class:`SparseMatrix` (scipy CSR/CSC)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import h5py
import numpy as np

from ..exceptions import FormatError, InvalidInputError, MissingDataError, ShapeError
from .accessors import Accessor, check_group
from .encoding import TEXT_DTYPE
from .stats import Statistics, read_statistics, scan_dataset, write_statistics
from .traits import Attr, NArray, as_array, lossless_cast

if TYPE_CHECKING:
    from .file import H5File

#: Upper bound on the bytes of one chunk of an appendable dataset (default chunking).
CHUNK_TARGET_BYTES = 1 << 20
#: Lower bound on the bytes of one chunk of an appendable dataset (default chunking).
CHUNK_MIN_BYTES = 1 << 12


def auto_chunks(
    shape: tuple[int, ...], axis: int, itemsize: int
) -> tuple[int, ...] | bool:
    """Chunk shape for a dataset growing along ``axis``, first written with ``shape``.

    Whole extent on the other axes; along ``axis`` the first block's length rounded up to
    a power of two, kept between :data:`CHUNK_MIN_BYTES` and :data:`CHUNK_TARGET_BYTES`.
    Rows larger than the target fall back to h5py's own guess.
    """
    other = [max(1, d) for i, d in enumerate(shape) if i != axis]
    row_bytes = itemsize * int(np.prod(other, dtype=np.int64))
    if row_bytes > CHUNK_TARGET_BYTES:
        return True
    lo = max(1, CHUNK_MIN_BYTES // row_bytes)
    hi = max(1, CHUNK_TARGET_BYTES // row_bytes)
    rows = 1 << max(0, int(shape[axis]) - 1).bit_length()
    chunks = [max(1, d) for d in shape]
    chunks[axis] = int(min(max(rows, lo), hi))
    return tuple(chunks)


def _decode(ds: h5py.Dataset, key: Any = ()) -> Any:
    info = h5py.check_string_dtype(ds.dtype)
    if info is not None and info.length is None:
        value = ds.asstr()[key]
        if isinstance(value, np.ndarray):
            return np.array(value.tolist(), dtype=str).reshape(value.shape)
        return value
    return ds[key]


class DataSet(Accessor):
    """An array stored as a dataset named after the field, with cached statistics.

    :param trait: an :class:`~bsb_store.h5.NArray` (or an ``Attr`` of arrays).
    :param expand_dimension: the axis :meth:`append` grows by default (``-1``: the last;
        ``0`` is honoured).
    :param statistics: keep min/max/mean/is_finite/has_complex attributes up to date.
    :param chunks: chunk shape for appendable datasets (default: :func:`auto_chunks`).
    :param compression: h5py compression filter for appendable datasets (e.g. "gzip").
    """

    def __init__(
        self,
        trait: Attr,
        h5file: H5File,
        name: str | None = None,
        expand_dimension: int = -1,
        *,
        statistics: bool = True,
        chunks: tuple[int, ...] | None = None,
        compression: str | None = None,
        compression_opts: Any = None,
    ) -> None:
        super().__init__(trait, h5file, name)
        self.expand_dimension = expand_dimension
        self.statistics = statistics
        self.chunks = chunks
        self.compression = compression
        self.compression_opts = compression_opts
        self._stats: Statistics | None = None

    # ------------------------------------------------------------ store / load
    def prepare(self, value: Any) -> np.ndarray | None:
        value = self.trait.validate(value)
        if value is None:
            return None
        return as_array(value, self.trait.qualified_name)

    def write(self, group: h5py.Group, prepared: np.ndarray | None) -> None:
        name = self.field_name
        if prepared is None:
            if name in group:
                del group[name]
            return
        text = prepared.dtype.kind == "U"
        data = prepared.astype(object) if text else prepared
        old = group.get(name)
        if (
            isinstance(old, h5py.Dataset)
            and old.shape == prepared.shape
            and old.dtype == (TEXT_DTYPE if text else prepared.dtype)
            and old.maxshape == old.shape
        ):
            old[()] = data
            ds = old
        else:
            if old is not None:
                del group[name]
            ds = group.create_dataset(name, data=data, dtype=TEXT_DTYPE if text else None)
        self._write_stats(ds, Statistics.from_array(prepared))

    def read(self, group: h5py.Group) -> np.ndarray:
        ds = self._dataset(group)
        if ds.shape is None:
            return self._read_null(ds)
        return np.asarray(_decode(ds))

    def _read_null(self, ds: h5py.Dataset) -> np.ndarray:
        # TVB stores 0-d arrays as a null dataspace; their statistics keep the value.
        stats = read_statistics(ds.attrs, self.owner.profile, 1)
        if stats is None or stats.minimum is None or stats.minimum != stats.maximum:
            raise self._missing("Value of the null-dataspace dataset")
        return np.asarray(stats.minimum, dtype=ds.dtype)

    def __getitem__(self, key: Any) -> Any:
        """Read part of the dataset with h5py's indexing rules (``f.x[0, 20:40]``)."""
        with self.owner._reading() as group:
            return _decode(self._dataset(group), key)

    @property
    def shape(self) -> tuple[int, ...]:
        """The dataset's shape, without reading its data."""
        with self.owner._reading() as group:
            return self._dataset(group).shape

    @property
    def dtype(self) -> np.dtype:
        """The dataset's on-disk dtype."""
        with self.owner._reading() as group:
            return self._dataset(group).dtype

    def _dataset(self, group: h5py.Group) -> h5py.Dataset:
        node = group.get(self.field_name)
        if node is None:
            raise self._missing("Dataset")
        if not isinstance(node, h5py.Dataset):
            raise FormatError(
                f"{self.field_name!r} in {self._where()} is a {type(node).__name__}, "
                "expected a dataset.",
                path=self._where(),
                name=self.field_name,
            )
        return node

    def _present(self, group: h5py.Group) -> bool:
        return self.field_name in group

    def _delete(self, group: h5py.Group) -> None:
        del group[self.field_name]
        self._stats = None

    # ------------------------------------------------------------------ append
    def append(self, data: Any, grow_dimension: int | None = None) -> None:
        """Append ``data`` along ``grow_dimension`` (default: ``expand_dimension``).

        The first append creates a chunked dataset resizable along that axis. Later
        appends must match the other dimensions and convert losslessly to the dataset's
        dtype. The statistics are merged (count-weighted) with those already on disk and
        written with the data. On any validation error nothing is written.

        :raises ShapeError: other dimensions differ, the axis is out of range, or the
            dataset cannot grow (it was written whole by :meth:`store`).
        :raises DtypeError: the data cannot be converted without loss.
        """
        what = f"{self.trait.qualified_name} ({self.field_name!r} in {self._where()})"
        if data is None:
            raise InvalidInputError(f"Cannot append None to {what}: expected an array.")
        arr = as_array(data, what)
        axis = self.expand_dimension if grow_dimension is None else grow_dimension
        if arr.ndim == 0 or not -arr.ndim <= axis < arr.ndim:
            raise ShapeError(
                f"Cannot append an array of shape {arr.shape} to {what} along axis "
                f"{axis}: it needs at least {max(axis + 1, -axis, 1)} dimension(s).",
                value=arr.shape,
            )
        axis %= arr.ndim
        if isinstance(self.trait, NArray):
            arr = lossless_cast(arr, self.trait.dtype, what)
            self.trait.check_shape(arr.shape, free_axis=axis)
        with self.owner._writing() as group:
            node = group.get(self.field_name)
            if node is None:
                self.owner._before_write(group)
                ds = self._create_growable(group, arr, axis)
                old = Statistics()
            else:
                ds = self._dataset(group)
                arr = self._check_growable(ds, arr, axis, what)
                old = self._current_stats(ds)
                self.owner._before_write(group)
                self._grow(ds, arr, axis)
            if self.statistics:
                self._write_stats(ds, old.merge(Statistics.from_array(arr)))

    def _create_growable(self, group: h5py.Group, arr: np.ndarray, axis: int) -> Any:
        text = arr.dtype.kind in "UO"
        dtype = TEXT_DTYPE if text else arr.dtype
        maxshape = list(arr.shape)
        maxshape[axis] = None  # type: ignore[call-overload]
        return group.create_dataset(
            self.field_name,
            data=arr.astype(object) if text else arr,
            dtype=dtype,
            maxshape=tuple(maxshape),
            chunks=self.chunks or auto_chunks(arr.shape, axis, dtype.itemsize),
            compression=self.compression,
            compression_opts=self.compression_opts,
        )

    def _check_growable(
        self, ds: h5py.Dataset, arr: np.ndarray, axis: int, what: str
    ) -> np.ndarray:
        if ds.shape is None or ds.ndim != arr.ndim:
            raise ShapeError(
                f"Cannot append an array of shape {arr.shape} to {what}: the dataset has "
                f"shape {ds.shape}, expected an array with {ds.ndim} dimension(s).",
                value=arr.shape,
            )
        for i, (have, got) in enumerate(zip(ds.shape, arr.shape)):
            if i != axis and have != got:
                want = tuple("N" if j == axis else d for j, d in enumerate(ds.shape))
                raise ShapeError(
                    f"Cannot append an array of shape {arr.shape} to {what}: expected "
                    f"shape {want} (growing axis {axis}).".replace("'N'", "N"),
                    value=arr.shape,
                )
        limit = ds.maxshape[axis]
        if ds.chunks is None or (
            limit is not None and ds.shape[axis] + arr.shape[axis] > limit
        ):
            raise ShapeError(
                f"Cannot append to {what}: the dataset cannot grow along axis {axis} "
                f"(shape {ds.shape}, maxshape {ds.maxshape}); it was written whole. Use "
                "append() from the start, or store() the full array.",
                value=ds.maxshape,
            )
        info = h5py.check_string_dtype(ds.dtype)
        target = TEXT_DTYPE if info is not None and info.length is None else ds.dtype
        arr = lossless_cast(arr, target, what)
        return arr.astype(object) if arr.dtype.kind == "U" else arr

    def _grow(self, ds: h5py.Dataset, arr: np.ndarray, axis: int) -> None:
        start = ds.shape[axis]
        ds.resize(start + arr.shape[axis], axis=axis)
        index = [slice(None)] * arr.ndim
        index[axis] = slice(start, start + arr.shape[axis])
        try:
            ds[tuple(index)] = arr
        except BaseException:
            ds.resize(start, axis=axis)
            raise

    def _current_stats(self, ds: h5py.Dataset) -> Statistics:
        size = int(ds.size or 0)
        if self._stats is not None and self._stats.count == size:
            return self._stats
        stats = read_statistics(ds.attrs, self.owner.profile, size)
        return stats if stats is not None else scan_dataset(ds)

    def _write_stats(self, ds: h5py.Dataset, stats: Statistics) -> None:
        if self.statistics:
            write_statistics(ds.attrs, stats, self.owner.profile, ds.dtype)
            self._stats = stats

    # -------------------------------------------------------------- statistics
    def get_cached_metadata(self) -> Statistics:
        """The stored statistics (min, max, mean, is_finite, has_complex), read from the
        dataset's attributes without reading its data.

        :raises MissingDataError: if the dataset or its statistics are absent, or the
            statistics are stale (native files record the element count they cover).
        """
        with self.owner._reading() as group:
            ds = self._dataset(group)
            stats = read_statistics(ds.attrs, self.owner.profile, int(ds.size or 0))
        if stats is None:
            raise MissingDataError(
                f"Dataset {self.field_name!r} in {self._where()} has no up-to-date "
                "statistics attributes; call recompute_statistics() to rebuild them.",
                path=self._where(),
                name=self.field_name,
            )
        return stats

    def recompute_statistics(self) -> Statistics:
        """Rebuild the statistics by reading the data in blocks, and write them."""
        with self.owner._writing(create=False) as group:
            ds = self._dataset(group)
            stats = scan_dataset(ds)
            self.owner._before_write(group)
            write_statistics(ds.attrs, stats, self.owner.profile, ds.dtype)
            self._stats = stats
        return stats


@dataclass(frozen=True)
class SparseMetadata:
    """What is recorded about a stored sparse matrix, readable without its data."""

    format: str
    dtype: np.dtype
    shape: tuple[int, int]
    nnz: int
    minimum: Any
    maximum: Any
    mean: Any
    is_array: bool


_PARTS = ("data", "indices", "indptr")


class SparseMatrix(Accessor):
    """A scipy CSR or CSC matrix (or sparse array), explicit zeros included.

    Native layout: a group ``<name>`` holding ``data``, ``indices`` and ``indptr`` with
    ``format``, ``shape``, ``kind`` and statistics attributes. TVB profile: root datasets
    ``<name>data``, ``<name>indptr``, ``<name>indices`` plus a float32 (1,) placeholder
    dataset ``<name>`` carrying the attributes. scipy is imported only when needed.
    """

    def prepare(self, value: Any) -> dict[str, Any] | None:
        if value is None:
            self.trait.validate(None)
            return None
        sparse = _scipy_sparse(self.trait.qualified_name)
        if not sparse.issparse(value) or value.format not in ("csr", "csc"):
            raise InvalidInputError(
                f"{self.trait.qualified_name} expects a scipy CSR or CSC matrix/array: "
                f"got {type(value).__name__} "
                f"{getattr(value, 'format', '(not sparse)')!r}.",
                value=type(value).__name__,
            )
        return {
            "format": value.format,
            "is_array": not sparse.isspmatrix(value),
            "shape": tuple(int(s) for s in value.shape),
            "data": np.asarray(value.data),
            "indices": np.asarray(value.indices),
            "indptr": np.asarray(value.indptr),
        }

    def write(self, group: h5py.Group, prepared: dict[str, Any] | None) -> None:
        if prepared is not None:
            if self.owner.profile.flat_sparse:
                self._write_flat(group, prepared)
            else:
                self._write_group(group, prepared)
        elif self._present(group):
            self._delete(group)

    def _write_group(self, group: h5py.Group, p: dict[str, Any]) -> None:
        tmp = f"{self.field_name}.__partial__"
        if tmp in group:
            del group[tmp]
        node = group.create_group(tmp)
        for part in _PARTS:
            node.create_dataset(part, data=p[part])
        node.attrs["format"] = p["format"]
        node.attrs["kind"] = "array" if p["is_array"] else "matrix"
        node.attrs["shape"] = np.array(p["shape"], dtype=np.int64)
        stats = Statistics.from_array(p["data"])
        write_statistics(node.attrs, stats, self.owner.profile, p["data"].dtype)
        if self.field_name in group:
            del group[self.field_name]
        group.move(tmp, self.field_name)

    def _write_flat(self, group: h5py.Group, p: dict[str, Any]) -> None:
        profile, name = self.owner.profile, self.field_name
        self._delete(group)
        for part in ("data", "indptr", "indices"):
            group.create_dataset(name + part, data=p[part])
        holder = group.create_dataset(name, data=np.zeros(1, dtype=np.float32))
        stats = Statistics.from_array(p["data"])
        for stat in ("minimum", "maximum", "mean"):
            value = getattr(stats, stat)
            holder.attrs[profile.key(profile.stat_keys[stat])] = (
                "" if value is None else value
            )
        holder.attrs[profile.key("format")] = p["format"]
        holder.attrs[profile.key("dtype")] = p["data"].dtype.str
        holder.attrs[profile.key("Shape")] = str(p["shape"])

    def read(self, group: h5py.Group) -> Any:
        meta = self._metadata(group)
        parts = self._parts(group)
        arrays = {k: parts[k][()] for k in _PARTS}
        sparse = _scipy_sparse(self.trait.qualified_name)
        kind = {
            ("csr", False): sparse.csr_matrix,
            ("csc", False): sparse.csc_matrix,
            ("csr", True): sparse.csr_array,
            ("csc", True): sparse.csc_array,
        }[(meta.format, meta.is_array)]
        return kind(
            (arrays["data"], arrays["indices"], arrays["indptr"]),
            shape=meta.shape,
            dtype=meta.dtype,
        )

    def get_metadata(self) -> SparseMetadata:
        """Format, dtype, shape, nnz and statistics, without reading the matrix."""
        with self.owner._reading() as group:
            return self._metadata(group)

    def _parts(self, group: h5py.Group) -> dict[str, h5py.Dataset]:
        name = self.field_name
        if self.owner.profile.flat_sparse:
            found = {k: group.get(name + k) for k in _PARTS}
        else:
            node = check_group(group[name], self._where(), name)
            found = {k: node.get(k) for k in _PARTS}
        for k, ds in found.items():
            if not isinstance(ds, h5py.Dataset):
                raise self._missing(f"Sparse part {k!r} of")
        return found  # type: ignore[return-value]

    def _metadata(self, group: h5py.Group) -> SparseMetadata:
        profile, name = self.owner.profile, self.field_name
        if name not in group:
            raise self._missing("Sparse matrix")
        node = group[name]
        attrs = node.attrs
        parts = self._parts(group)

        def attr(key: str) -> Any:
            if key not in attrs:
                raise FormatError(
                    f"Sparse matrix {name!r} in {self._where()} lacks its {key!r} "
                    "attribute.",
                    path=self._where(),
                    name=name,
                )
            return attrs[key]

        if profile.flat_sparse:
            fmt = _text(attr(profile.key("format")))
            dtype = np.dtype(_text(attr(profile.key("dtype"))))
            shape_text = _text(attr(profile.key("Shape")))
            shape = tuple(int(x) for x in re.findall(r"\d+", shape_text))
            is_array = False
        else:
            fmt = _text(attr("format"))
            dtype = parts["data"].dtype
            shape = tuple(int(x) for x in attr("shape"))
            is_array = _text(attrs.get("kind", "matrix")) == "array"
        if fmt not in ("csr", "csc") or len(shape) != 2:
            raise FormatError(
                f"Sparse matrix {name!r} in {self._where()} has format {fmt!r} and shape "
                f"{shape}: expected 'csr' or 'csc' and 2 dimensions.",
                path=self._where(),
                name=name,
            )
        nnz = int(parts["data"].shape[0])
        stats = read_statistics(attrs, profile, nnz) or Statistics(count=nnz)
        return SparseMetadata(
            fmt, dtype, shape, nnz, stats.minimum, stats.maximum, stats.mean, is_array
        )  # type: ignore[arg-type]

    def _present(self, group: h5py.Group) -> bool:
        return self.field_name in group

    def _delete(self, group: h5py.Group) -> None:
        names = [self.field_name]
        if self.owner.profile.flat_sparse:
            names += [self.field_name + k for k in _PARTS]
        for name in names:
            if name in group:
                del group[name]


def _text(raw: Any) -> str:
    return raw.decode("utf-8") if isinstance(raw, (bytes, np.bytes_)) else str(raw)


def _scipy_sparse(what: str) -> Any:
    try:
        import scipy.sparse as sparse
    except ImportError as e:  # pragma: no cover - scipy is installed in the test env
        raise InvalidInputError(
            f"{what} needs scipy to store or load sparse matrices: pip install scipy."
        ) from e
    return sparse
