"""DataSet (store, partial reads, appends) and SparseMatrix."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import scipy.sparse as sp

from bsb_store.exceptions import (
    DtypeError,
    FormatError,
    InvalidInputError,
    MissingDataError,
    ShapeError,
)
from bsb_store.h5 import Attr, DataSet, H5File, NArray, SparseMatrix
from bsb_store.h5.datasets import CHUNK_MIN_BYTES, CHUNK_TARGET_BYTES, auto_chunks


def make(path, trait=None, **kwargs):
    f = H5File(path, profile=kwargs.pop("profile", None))
    return f, DataSet(trait or NArray(dtype=None), f, name="x", **kwargs)


# -------------------------------------------------------------------- store
@pytest.mark.parametrize(
    "value",
    [
        np.arange(12.0).reshape(3, 4),
        np.array([1, -2, 3], dtype=np.int32),
        np.array([True, False]),
        np.array([1 + 2j, 3 - 1j]),
        np.array(["héllo", "wörld", ""]),
        np.array(b"abc"),
        np.float64(2.5),
        np.zeros((0, 3)),
    ],
    ids=["float", "int32", "bool", "complex", "text", "bytes0d", "0d", "empty"],
)
def test_store_load_round_trip(h5path, value):
    _, ds = make(h5path)
    ds.store(value)
    loaded = ds.load()
    assert loaded.shape == np.shape(value)
    assert loaded.dtype == np.asarray(value).dtype or np.asarray(value).dtype.kind == "U"
    np.testing.assert_array_equal(loaded, value)


def test_text_is_stored_as_vlen_utf8_and_not_truncated(h5path):
    _, ds = make(h5path, NArray(dtype=str))
    long = "é" * 300
    ds.store(np.array([long, "b"]))
    with h5py.File(h5path, "r") as raw:
        info = h5py.check_string_dtype(raw["x"].dtype)
        assert info.encoding == "utf-8" and info.length is None
    assert ds.load()[0] == long  # TVB truncates to 128 characters
    assert ds[1] == "b"


def test_zero_d_arrays_keep_their_value(h5path):
    _, ds = make(h5path)
    ds.store(np.array(7.25))
    with h5py.File(h5path, "r") as raw:
        assert raw["x"].shape == ()
    assert ds.load() == 7.25 and ds.shape == ()


def test_reading_tvb_null_dataspace(h5path):
    with h5py.File(h5path, "w") as raw:
        ds = raw.create_dataset("x", data=h5py.Empty("f"))
        ds.attrs["TVB_Minimum"] = np.float32(3.5)
        ds.attrs["TVB_Maximum"] = np.float32(3.5)
        raw.create_dataset("y", data=h5py.Empty("f"))
    f = H5File(h5path, mode="r", profile="tvb")
    assert DataSet(NArray(), f, name="x").load() == 3.5
    with pytest.raises(MissingDataError, match="null-dataspace"):
        DataSet(NArray(), f, name="y").load()


def test_store_validates_against_the_field(h5path, unchanged):
    _, ds = make(h5path, NArray(dtype=float, shape=(None, 2)))
    ds.store(np.ones((2, 2)))
    check = unchanged(h5path)
    with pytest.raises(ShapeError, match=r"expects shape \(N, 2\): got shape \(2, 3\)"):
        ds.store(np.ones((2, 3)))
    with pytest.raises(DtypeError, match="complex128"):
        ds.store(np.ones((2, 2), dtype=complex))
    with pytest.raises(InvalidInputError, match="required"):
        ds.store(None)
    check()


def test_store_overwrites_in_place_or_recreates(h5path):
    _, ds = make(h5path, NArray(dtype=float))
    ds.store(np.zeros((2, 2)))
    with h5py.File(h5path, "r") as raw:
        first = raw["x"].id.get_offset()
    ds.store(np.ones((2, 2)))
    with h5py.File(h5path, "r") as raw:
        assert raw["x"].id.get_offset() == first
    ds.store(np.ones((3, 1)))
    assert ds.load().shape == (3, 1)
    assert ds.get_cached_metadata().count == 3


def test_store_none_removes_optional(h5path):
    _, ds = make(h5path, NArray(required=False))
    ds.store(np.ones(2))
    ds.store(None)
    with h5py.File(h5path, "r") as raw:
        assert "x" not in raw
    with pytest.raises(MissingDataError, match="Dataset 'x' is absent"):
        ds.load()


def test_partial_reads(h5path):
    _, ds = make(h5path)
    data = np.arange(200.0).reshape(2, 100)
    ds.store(data)
    np.testing.assert_array_equal(ds[0, 20:40], data[0, 20:40])
    np.testing.assert_array_equal(ds[:, ::10], data[:, ::10])
    np.testing.assert_array_equal(ds[1, [3, 5, 7]], data[1, [3, 5, 7]])
    assert ds[1, 99] == 199.0
    assert ds.shape == (2, 100) and ds.dtype == np.float64


def test_missing_and_mistyped_nodes(h5path):
    f, ds = make(h5path)
    f.store_metadata_param("k", 1)
    with pytest.raises(MissingDataError):
        ds[0]
    with pytest.raises(MissingDataError):
        _ = ds.shape
    with pytest.raises(MissingDataError):
        ds.get_cached_metadata()
    with h5py.File(h5path, "r+") as raw:
        raw.create_group("x")
    with pytest.raises(FormatError, match="expected a dataset"):
        ds.load()


# ------------------------------------------------------------------- append
def test_append_last_dimension_by_default(h5path):
    _, ds = make(h5path)
    ds.append(np.ones((2, 3)))
    ds.append(np.zeros((2, 1)))
    assert ds.shape == (2, 4)
    with h5py.File(h5path, "r") as raw:
        assert raw["x"].maxshape == (2, None)
        assert raw["x"].chunks is not None


def test_append_dimension_zero_is_honoured(h5path):
    # TVB treats grow_dimension=0 as "not given" (reference §4.2).
    _, ds = make(h5path, expand_dimension=1)
    ds.append(np.ones((2, 2)), grow_dimension=0)
    ds.append(np.ones((3, 2)), grow_dimension=0)
    assert ds.shape == (5, 2)
    _, ds0 = make(h5path.with_name("g.h5"), expand_dimension=0)
    ds0.append(np.ones((1, 4)))
    ds0.append(np.arange(8.0).reshape(2, 4))
    assert ds0.shape == (3, 4)
    np.testing.assert_array_equal(ds0[1:], np.arange(8.0).reshape(2, 4))


def test_append_negative_axis_and_contents(h5path):
    _, ds = make(h5path)
    blocks = [np.random.default_rng(i).random((2, 1, 3)) for i in range(4)]
    for block in blocks:
        ds.append(block, grow_dimension=-2)
    np.testing.assert_array_equal(ds.load(), np.concatenate(blocks, axis=1))


def test_append_text(h5path):
    _, ds = make(h5path, NArray(dtype=str), expand_dimension=0)
    ds.append(np.array(["a", "bé"]))
    ds.append(np.array(["c"]))
    assert ds.load().tolist() == ["a", "bé", "c"]


def test_append_options(h5path):
    _, ds = make(h5path, expand_dimension=0, chunks=(16, 3), compression="gzip")
    ds.append(np.ones((5, 3)))
    with h5py.File(h5path, "r") as raw:
        assert raw["x"].chunks == (16, 3)
        assert raw["x"].compression == "gzip"


def test_auto_chunks_bounds():
    assert auto_chunks((3, 3), 0, 8) == (CHUNK_MIN_BYTES // 24, 3)
    big = auto_chunks((10**6, 4), 0, 8)
    assert big[1] == 4 and big[0] * 32 <= CHUNK_TARGET_BYTES
    assert big[0] * 32 > CHUNK_TARGET_BYTES // 2
    assert auto_chunks((1000, 2), 1, 8) == (1000, 2)  # one row is already > 4 KiB
    assert auto_chunks((10, 2), 1, 8) == (10, 4096 // 80)
    assert auto_chunks((2, 10**6), 0, 8) is True
    assert auto_chunks((0, 3), 0, 8)[1] == 3


APPEND_FAILURES = {
    "float into int": (np.int64, (2, 3), np.full((1, 3), 0.5), DtypeError, "float64"),
    "complex into float": (
        float,
        (2, 3),
        np.ones((1, 3), complex),
        DtypeError,
        "complex",
    ),
    "other dimension": (float, (2, 3), np.ones((1, 2)), ShapeError, r"\(N, 3\)"),
    "ndim": (float, (2, 3), np.ones(3), ShapeError, "dimension"),
    "axis out of range": (float, (2, 3), np.ones((1, 3)), ShapeError, "axis 5"),
    "none": (float, (2, 3), None, InvalidInputError, "None"),
    "zero-d": (float, (2, 3), np.float64(1), ShapeError, "axis 0"),
    "text into float": (float, (2, 3), np.array([["a", "b", "c"]]), DtypeError, "<U1"),
}


@pytest.mark.parametrize("case", list(APPEND_FAILURES))
def test_append_failures_write_nothing(h5path, unchanged, case):
    dtype, shape, data, error, message = APPEND_FAILURES[case]
    f = H5File(h5path)
    ds = DataSet(NArray(dtype=None), f, name="x", expand_dimension=0)
    ds.append(np.zeros(shape, dtype=dtype))
    check = unchanged(h5path)
    grow = 5 if case == "axis out of range" else None
    with pytest.raises(error, match=message) as err:
        ds.append(data, grow_dimension=grow)
    if case in ("float into int", "other dimension"):
        assert "'x'" in str(err.value) and "f.h5" in str(err.value)
    check()
    assert ds.shape == shape


def test_append_to_a_stored_dataset_raises(h5path, unchanged):
    # TVB logs and swallows this, losing the data (reference §4.5).
    _, ds = make(h5path)
    ds.store(np.ones((2, 2)))
    check = unchanged(h5path)
    with pytest.raises(ShapeError, match="cannot grow along axis 1"):
        ds.append(np.ones((2, 1)))
    check()


def test_append_beyond_maxshape_raises(h5path, unchanged):
    with h5py.File(h5path, "w") as raw:
        raw.create_dataset("x", shape=(2,), maxshape=(3,), chunks=(1,), dtype="f8")
    check = unchanged(h5path)
    f = H5File(h5path)
    with pytest.raises(ShapeError, match=r"maxshape \(3,\)"):
        DataSet(NArray(), f, name="x").append(np.ones(2))
    check()


def test_append_int64_into_float_only_when_exact(h5path, unchanged):
    _, ds = make(h5path, NArray(dtype=float), expand_dimension=0)
    ds.append(np.array([1, 2, 3]))
    check = unchanged(h5path)
    with pytest.raises(DtypeError, match="without rounding"):
        ds.append(np.array([2**60 + 1]))
    check()
    assert ds.dtype == np.float64


def test_append_validates_against_field_shape(h5path):
    _, ds = make(h5path, NArray(dtype=float, shape=(None, 3)), expand_dimension=0)
    with pytest.raises(ShapeError, match=r"\(N, 3\)"):
        ds.append(np.ones((2, 2)))
    assert not h5path.exists()  # validated before the file was created


# ------------------------------------------------------------------- sparse
SPARSE = {
    "csr_matrix": sp.csr_matrix(np.array([[0, 2.0, 0], [1, 0, 3], [0, 0, 0]])),
    "csc_matrix": sp.csc_matrix(np.array([[0, 2.0], [1, 0], [0, 4]])),
    "csr_array": sp.csr_array(np.array([[1, 0], [0, 5]], dtype=np.int32)),
    "csc_array": sp.csc_array(np.eye(3, dtype=np.float32)),
    "explicit_zeros": sp.csr_matrix(
        (np.array([0.0, 5.0, 0.0]), np.array([2, 0, 1]), np.array([0, 1, 3])),
        shape=(2, 3),
    ),
    "no_entries": sp.csc_matrix((4, 2)),
}


def _same_sparse(a, b):
    assert type(a) is type(b)
    assert a.shape == b.shape and a.dtype == b.dtype and a.nnz == b.nnz
    np.testing.assert_array_equal(a.data, b.data)
    np.testing.assert_array_equal(a.indices, b.indices)
    np.testing.assert_array_equal(a.indptr, b.indptr)


@pytest.mark.parametrize("profile", ["native", "tvb"])
@pytest.mark.parametrize("name", list(SPARSE))
def test_sparse_round_trip(tmp_path, name, profile):
    value = SPARSE[name]
    f = H5File(tmp_path / "s.h5", profile=profile)
    acc = SparseMatrix(Attr(object), f, name="m")
    acc.store(value)
    loaded = acc.load()
    if profile == "tvb" and name.endswith("array"):
        # TVB's layout has no room for the matrix/array distinction.
        loaded = type(value)(loaded)
    _same_sparse(loaded, value)
    meta = acc.get_metadata()
    assert (meta.format, meta.shape, meta.nnz) == (value.format, value.shape, value.nnz)
    if value.nnz:
        assert meta.minimum == value.data.min() and meta.maximum == value.data.max()
        assert meta.mean == pytest.approx(value.data.mean())
    else:
        assert meta.minimum is None and meta.mean is None


def test_sparse_layouts(tmp_path):
    value = SPARSE["csc_matrix"]
    native = tmp_path / "n.h5"
    SparseMatrix(Attr(object), H5File(native), name="m").store(value)
    with h5py.File(native, "r") as raw:
        assert isinstance(raw["m"], h5py.Group)
        assert sorted(raw["m"]) == ["data", "indices", "indptr"]
        assert raw["m"].attrs["format"] == "csc"
        assert raw["m"].attrs["shape"].tolist() == [3, 2]
        assert raw["m"].attrs["count"] == 3
    tvb = tmp_path / "t.h5"
    SparseMatrix(Attr(object), H5File(tvb, profile="tvb"), name="m").store(value)
    with h5py.File(tvb, "r") as raw:
        assert sorted(raw) == ["m", "mdata", "mindices", "mindptr"]
        holder = raw["m"]
        assert holder.dtype == np.float32 and holder.shape == (1,)
        assert holder.attrs["TVB_format"] == "csc"
        assert holder.attrs["TVB_dtype"] == "<f8"
        assert holder.attrs["TVB_Shape"] == "(3, 2)"
        assert holder.attrs["TVB_Minimum"] == 1.0 and holder.attrs["TVB_Maximum"] == 4.0
        assert holder.attrs["TVB_Mean"] == pytest.approx(7 / 3)


@pytest.mark.parametrize("profile", ["native", "tvb"])
def test_sparse_replace_and_remove(tmp_path, profile):
    path = tmp_path / "s.h5"
    acc = SparseMatrix(
        Attr(object, required=False), H5File(path, profile=profile), name="m"
    )
    acc.store(SPARSE["csr_matrix"])
    acc.store(SPARSE["no_entries"])
    _same_sparse(acc.load(), SPARSE["no_entries"])
    acc.store(None)
    with h5py.File(path, "r") as raw:
        assert not [n for n in raw if n.startswith("m")]
    with pytest.raises(MissingDataError):
        acc.load()


@pytest.mark.parametrize(
    "bad", [sp.coo_matrix(np.eye(2)), np.eye(2), [[1, 0]], sp.lil_matrix((2, 2))]
)
def test_sparse_rejects_other_inputs(h5path, unchanged, bad):
    acc = SparseMatrix(Attr(object), H5File(h5path), name="m")
    acc.store(SPARSE["csr_matrix"])
    check = unchanged(h5path)
    with pytest.raises(InvalidInputError, match="CSR or CSC"):
        acc.store(bad)
    check()


def test_sparse_malformed_on_disk(h5path):
    acc = SparseMatrix(Attr(object), H5File(h5path), name="m")
    acc.store(SPARSE["csr_matrix"])
    with h5py.File(h5path, "r+") as raw:
        raw["m"].attrs["format"] = "coo"
    with pytest.raises(FormatError, match="'coo'"):
        acc.load()
    with h5py.File(h5path, "r+") as raw:
        del raw["m"].attrs["format"]
    with pytest.raises(FormatError, match="lacks its 'format' attribute"):
        acc.load()
    with h5py.File(h5path, "r+") as raw:
        del raw["m/indptr"]
    with pytest.raises(MissingDataError, match="'indptr'"):
        acc.get_metadata()
