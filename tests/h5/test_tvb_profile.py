"""The TVB profile in both directions, against the fixtures in tests/data/tvb.

The fixtures were written with raw h5py to mirror what TVB 2.10 writes (reference §3.7,
``tests/data/tvb/make_files.py``). Reading them proves we read TVB's files; writing the
same objects with our TVB profile and comparing the full structure (attribute names,
HDF5 types, string encodings, values, dataset layouts) proves TVB gets what it expects.
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.sparse as sp

from bsb_store.exceptions import UnknownFormatError
from bsb_store.h5 import (
    Attr,
    DataSet,
    GenericAttributes,
    H5File,
    HasTraits,
    Json,
    NArray,
    Reference,
    Scalar,
    TVBH5File,
    determine_type,
    h5_class_from_file,
    register,
    register_datatype,
    registry,
)
from bsb_store.h5.tvb import Connectivity, ConnectivityH5, tvb_file_name

from .conftest import attrs_of, fixtures
from .formats import Rich, RichSubH5, Tiny, TinyH5


def _value(raw):
    if isinstance(raw, np.ndarray):
        return ("array", raw.dtype.str, raw.tolist())
    if isinstance(raw, np.generic):
        return (raw.dtype.str, raw.item())
    return raw


def _attrs(obj, mask):
    out = {}
    for name in obj.attrs:
        aid = obj.attrs.get_id(name)
        htype, space = aid.get_type(), aid.get_space()
        if htype.get_class() == h5py.h5t.STRING:
            kind = ("string", htype.is_variable_str(), htype.get_cset())
        else:
            kind = (htype.get_class(), aid.dtype.str)
        value = "<masked>" if name in mask else _value(obj.attrs[name])
        out[name] = (kind, space.get_simple_extent_type(), value)
    return out


def dump(path: Path, mask: tuple[str, ...] = ()) -> dict:
    """Everything TVB can observe in a file, excluding the superblock version."""
    result = {}
    with h5py.File(path, "r") as f:
        result["/"] = _attrs(f, mask)

        def visit(name, obj):
            if isinstance(obj, h5py.Group):
                result[name] = ("group", _attrs(obj, mask))
                return
            string = h5py.check_string_dtype(obj.dtype)
            result[name] = {
                "dtype": (string.encoding, string.length) if string else obj.dtype.str,
                "shape": obj.shape,
                "maxshape": obj.maxshape,
                "chunks": obj.chunks,
                "compression": obj.compression,
                "layout": obj.id.get_create_plist().get_layout(),
                "data": _value(obj[()]),
                "attrs": _attrs(obj, mask),
            }

        f.visititems(visit)
    return result


# ------------------------------------------------------------- TVB -> us
def test_read_tiny(tvb_file, unchanged):
    path = tvb_file("tiny.h5")
    check = unchanged(path)
    f = H5File.from_file(path)
    assert type(f) is TinyH5 and f.profile.name == "tvb"
    t = f.load_into(Tiny())
    np.testing.assert_array_equal(t.data, [[1.0, 2.0], [3.0, 4.5]])
    assert t.count == 7 and t.gid == fixtures.TINY_GID
    assert f.data[0, :].tolist() == [1.0, 2.0] and f.data.shape == (2, 2)
    s = f.data.get_cached_metadata()
    assert (s.minimum, s.maximum, s.mean, s.is_finite, s.has_complex) == (
        1.0,
        4.5,
        2.625,
        True,
        False,
    )
    assert determine_type(path) is HasTraits
    assert h5_class_from_file(path) is TinyH5
    check()


def test_read_rich(tvb_file, unchanged):
    path = tvb_file("rich.h5")
    check = unchanged(path)
    assert determine_type(path) is Rich
    f = H5File.from_file(path)
    assert type(f) is RichSubH5
    r = f.load_into(Rich())
    assert (r.count, r.ratio, r.name, r.flag) == (3, 0.25, "héllo", False)
    assert r.child is None and f.child.load() == fixtures.CHILD_GID
    assert r.other == fixtures.OTHER_GID
    assert r.meta == {"k": [1, 2], "n": None}
    assert r.eq["type"] == "Gaussian"
    assert r.opt is None
    assert r.labels.tolist() == [b"alpha", b"beta"] and r.labels.dtype == "S32"
    assert r.ints.dtype == np.int64 and r.extra_ds.tolist() == [0.5, 1.5, 2.5]
    np.testing.assert_array_equal(r.series[:, 0], [0, 0, 1, 1, 2, 2])
    assert f.series.get_cached_metadata().mean == 1.25  # as TVB stored it
    mtx = r.mtx
    assert isinstance(mtx, sp.csc_matrix) and mtx.shape == (3, 3)
    assert mtx.nnz == 3 and mtx.data.tolist() == [2.0, 0.0, 5.0]  # explicit zero kept
    assert mtx.toarray().tolist() == [[2, 0, 0], [0, 0, 5], [0, 0, 0]]
    assert f.independent_int.load() == 11
    assert f.get_metadata_param("custom_key") == "custom_value"
    assert f.get_metadata_param("flag") is False
    ga = f.load_generic_attributes()
    assert (ga.subject, ga.user_tag_1, ga.visible, ga.invalid) == (
        "subj",
        "tag",
        True,
        False,
    )
    assert ga.parent_burst == fixtures.BURST_GID
    assert ga.create_date.isoformat() == "2026-11-21T12:35:02.845343"
    assert [(t.field_name, v) for t, v in f.gather_references()] == [
        ("child", fixtures.CHILD_GID)
    ]
    check()


def test_read_tvb_connectivity_through_registry_alias(tvb_file, unchanged):
    path = tvb_file("Connectivity_*.h5")
    check = unchanged(path)
    assert path.name == tvb_file_name(ConnectivityH5, fixtures.CONN_GID)
    assert h5_class_from_file(path) is ConnectivityH5
    f = H5File.from_file(path)
    c = f.load_into(Connectivity())
    assert c.region_labels.tolist() == ["lA1", "rV1", "rÉ2"]
    assert c.hemispheres.dtype == bool and c.hemispheres.tolist() == [False, True, True]
    assert c.weights[0, 2] == 2.0 and c.tract_lengths[1, 2] == 30.0
    assert (c.undirected, c.number_of_regions, c.number_of_connections) == (True, 3, 6)
    assert c.saved_selection == [] and c.cortical is None and c.areas is None
    assert c.gid == fixtures.CONN_GID
    hemi = f.hemispheres.get_cached_metadata()
    assert (hemi.minimum, hemi.maximum) == (False, True)
    labels = f.region_labels.get_cached_metadata()
    assert labels.minimum is None and labels.mean is None
    check()


class TimeSeriesRegion(HasTraits, register=False):
    data = NArray(dtype=float, ndim=4)
    time = NArray(dtype=float, ndim=1)
    connectivity = Attr(Connectivity)
    labels_ordering = Attr(list)
    labels_dimensions = Attr(dict)
    sample_period = Attr(float)
    sample_period_unit = Attr(str)
    start_time = Attr(float)
    title = Attr(str)
    nr_dimensions = Attr(int)


class TimeSeriesRegionH5(
    TVBH5File, name="tvb.adapters.datatypes.h5.time_series_h5.TimeSeriesRegionH5"
):
    def __init__(self, path, **kwargs):
        super().__init__(path, **kwargs)
        self.data = DataSet(TimeSeriesRegion.data, self, expand_dimension=0)
        self.time = DataSet(TimeSeriesRegion.time, self, expand_dimension=0)
        self.connectivity = Reference(TimeSeriesRegion.connectivity, self)
        for name in ("sample_period", "sample_period_unit", "start_time", "title"):
            setattr(self, name, Scalar(TimeSeriesRegion.trait(name), self))
        self.nr_dimensions = Scalar(TimeSeriesRegion.nr_dimensions, self)
        self.labels_ordering = Json(TimeSeriesRegion.labels_ordering, self)
        self.labels_dimensions = Json(TimeSeriesRegion.labels_dimensions, self)


def test_read_and_extend_a_streamed_tvb_time_series(tvb_file):
    path = tvb_file("TimeSeriesRegion_*.h5")
    f = H5File.from_file(path, mode="r+")
    assert type(f) is TimeSeriesRegionH5
    ts = f.load_into(TimeSeriesRegion())
    assert ts.data.shape == (6, 1, 3, 1) and ts.title == "region time series"
    assert ts.labels_ordering == ["Time", "State Variable", "Region", "Mode"]
    assert f.connectivity.load() == fixtures.CONN_GID
    np.testing.assert_array_equal(f.data[0:3, :, 0], ts.data[0:3, :, 0])
    before = f.time.get_cached_metadata()
    assert before.mean == 1.5  # TVB's unweighted mean, kept as stored
    f.time.append(np.array([3.0, 3.5]))
    after = TimeSeriesRegionH5(path, mode="r").time.get_cached_metadata()
    assert after.count == 8 and after.maximum == 3.5
    assert after.mean == pytest.approx((1.5 * 6 + 6.5) / 8)  # merged, count-weighted
    with h5py.File(path, "r") as raw:  # the appended file keeps TVB's conventions
        assert raw["time"].attrs["TVB_IsFinite"] == "bool:True"
        assert "count" not in raw["time"].attrs and raw["time"].shape == (8,)


def test_view_model_file_needs_a_registered_class(tvb_file, unchanged):
    path = tvb_file("Linear_*.h5")
    check = unchanged(path)
    with pytest.raises(UnknownFormatError, match=r"ViewModelH5'.*not a registered"):
        H5File.from_file(path)
    with pytest.raises(UnknownFormatError, match=r"tvb\.simulator\.coupling\.Linear"):
        determine_type(path)

    class Linear(HasTraits, register=False):
        a = NArray()
        b = NArray()

    class LinearH5(TVBH5File, register=False):
        def __init__(self, path, **kwargs):
            super().__init__(path, **kwargs)
            self.declare_fields(Linear)

    register("tvb.core.neotraits._h5core.ViewModelH5", LinearH5)
    register_datatype("tvb.simulator.coupling.Linear", Linear)
    try:
        assert determine_type(path) is Linear
        linear = H5File.from_file(path).load_into(Linear())
        assert linear.a.tolist() == [0.00390625] and linear.b.tolist() == [0.0]
    finally:
        registry.formats.unregister("tvb.core.neotraits._h5core.ViewModelH5")
        registry.datatypes.unregister("tvb.simulator.coupling.Linear")
    check()


def test_truncated_tvb_file(tvb_file, unchanged):
    from bsb_store.exceptions import NotAStoreError

    path = tvb_file("truncated.h5")
    check = unchanged(path)
    with pytest.raises(NotAStoreError, match="truncated or corrupt"):
        H5File.from_file(path)
    with pytest.raises(NotAStoreError):
        TinyH5(path).count.store(1)
    check()


def test_tolerant_reading_of_tvb_quirks(h5path):
    gid = uuid.uuid4()
    with h5py.File(h5path, "w") as raw:
        raw.attrs["TVB_written_by"] = np.bytes_(b"rtmod.TinyH5")  # fixed-length bytes
        raw.attrs["TVB_gid"] = gid.hex  # hex instead of urn
        raw.attrs["TVB_count"] = np.int64(2)
        raw.attrs["TVB_flag"] = np.bytes_(b"bool:True")
        ds = raw.create_dataset("data", data=np.array([1.0, 3.0]))
        ds.attrs["TVB_Minimum"] = 1.0
        ds.attrs["TVB_Maximum"] = 3.0
        ds.attrs["TVB_Mean"] = 2.0  # no IsFinite/HasComplex
    f = H5File.from_file(h5path)
    assert type(f) is TinyH5
    assert f.load_into(Tiny()).gid == gid
    assert f.get_metadata_param("flag") is True
    s = f.data.get_cached_metadata()
    assert s.mean == 2.0 and s.is_finite and not s.has_complex


# ------------------------------------------------------------- us -> TVB
def test_write_tiny_exactly_as_tvb(tmp_path, tvb_file):
    ours = tmp_path / "ours.h5"
    TinyH5(ours).store(
        Tiny(data=np.array([[1, 2], [3, 4.5]]), count=7, gid=fixtures.TINY_GID)
    )
    assert dump(ours) == dump(tvb_file("tiny.h5"))


def _rich():
    return Rich(
        gid=fixtures.RICH_GID,
        data=np.arange(6.0).reshape(2, 3),
        extra_ds=np.array([0.5, 1.5, 2.5], dtype=np.float32),
        ints=np.array([4, -2, 9, 1]),
        labels=np.array([b"alpha", b"beta"], dtype="S32"),
        mtx=sp.csc_matrix(
            (np.array([2.0, 0.0, 5.0]), np.array([0, 2, 1]), np.array([0, 1, 2, 3])),
            shape=(3, 3),
        ),
        count=3,
        ratio=0.25,
        name="héllo",
        flag=False,
        child=Tiny(gid=fixtures.CHILD_GID),
        other=fixtures.OTHER_GID,
        meta={"k": [1, 2], "n": None},
        eq={
            "type": "Gaussian",
            "parameters": {"amp": 1.0, "sigma": 1.0, "midpoint": 0.0, "offset": 0.0},
        },
        opt=None,
    )


def test_write_rich_as_tvb(tmp_path, tvb_file):
    ours = tmp_path / "ours.h5"
    f = RichSubH5(ours)
    f.store(_rich(), scalars_only=True)  # TVB's streaming pattern: header first
    f.store(_rich())  # (series is None: it stays absent until appended)
    for value in (0.0, 1.0, 2.0):
        f.series.append(np.full((2, 2), value))
    f.independent_int.store(11)
    f.store_generic_attributes(
        GenericAttributes(
            subject="subj", user_tag_1="tag", parent_burst=fixtures.BURST_GID
        )
    )
    f.store_metadata_param("custom_key", "custom_value")
    f.type.store("rtmod.Rich")
    mine = dump(ours, mask=("TVB_create_date",))
    theirs = dump(tvb_file("rich.h5"), mask=("TVB_create_date",))
    # The one intended difference: TVB's halving mean of the appended blocks was wrong.
    assert theirs["series"]["attrs"]["TVB_Mean"][2] == ("<f8", 1.25)
    assert mine["series"]["attrs"]["TVB_Mean"][2] == ("<f8", 1.0)
    theirs["series"]["attrs"]["TVB_Mean"] = mine["series"]["attrs"]["TVB_Mean"]
    assert mine == theirs
    created = attrs_of(ours)["TVB_create_date"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\d,\d\d-\d\d-\d\d\.\d{6}", created)


def test_write_connectivity_as_tvb(tmp_path, tvb_file):
    weights = np.array([[0.0, 1.0, 2.0], [1.0, 0.0, 3.0], [2.0, 3.0, 0.0]])
    conn = Connectivity(
        gid=fixtures.CONN_GID,
        region_labels=np.array(["lA1", "rV1", "rÉ2"]),
        weights=weights,
        tract_lengths=weights * 10,
        centres=np.arange(9.0).reshape(3, 3),
        hemispheres=np.array([False, True, True]),
        undirected=True,
        number_of_regions=3,
        number_of_connections=6,
        saved_selection=[],
    )
    ours = tmp_path / tvb_file_name(ConnectivityH5, conn.gid)
    with ConnectivityH5(ours, mode="w") as f:
        f.store(conn)
        f.store_generic_attributes(GenericAttributes())
    mask = ("TVB_create_date",)
    assert dump(ours, mask) == dump(tvb_file("Connectivity_*.h5"), mask)


def test_tvb_profile_headers_and_encodings(h5path):
    f = H5File(h5path, profile="tvb")
    f.store_metadata_param("flag", True)
    f.gid.store(uuid.UUID(int=1))
    Json(Attr(list, required=False), f, name="sel").store(None)
    attrs = attrs_of(h5path)
    assert attrs["TVB_Data_version"] == 5 and attrs["TVB_Data_version"].dtype == np.int64
    assert attrs["TVB_written_by"] == "bsb_store.h5.file.H5File"
    assert attrs["TVB_flag"] == "bool:True"
    assert attrs["TVB_gid"] == "urn:uuid:00000000-0000-0000-0000-000000000001"
    assert attrs["TVB_sel"] == "null"
    assert H5File(h5path).profile.name == "tvb"  # detected on reopen
    with h5py.File(h5path, "r") as raw:
        assert list(raw) == []  # flat: no groups were created
