"""Attribute-backed accessors and bulk store/load_into."""

from __future__ import annotations

import json
import uuid

import h5py
import numpy as np
import pytest

from bsb_store.exceptions import (
    DtypeError,
    FormatError,
    InvalidInputError,
    MissingDataError,
)
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
    Uuid,
)

from .conftest import attrs_of
from .formats import (
    Color,
    Listing,
    ListingH5,
    Tiny,
    Volume,
    VolumeH5,
    VolumeSubH5,
    make_volume,
)


# ------------------------------------------------------------------ Scalar
@pytest.mark.parametrize(
    ("ftype", "value", "raw"),
    [
        (str, "héllo ✓", "héllo ✓"),
        (int, 7, np.int64(7)),
        (float, 0.25, np.float64(0.25)),
        (bool, True, np.True_),
        (bool, False, np.False_),
    ],
)
def test_scalar_round_trip_native(h5path, ftype, value, raw):
    f = H5File(h5path)
    acc = Scalar(Attr(ftype), f, name="x")
    acc.store(value)
    loaded = acc.load()
    assert loaded == value and type(loaded) is ftype
    stored = attrs_of(h5path)["x"]
    assert stored == raw and type(stored) is type(raw)


def test_scalar_none_means_absent(h5path):
    f = H5File(h5path)
    acc = Scalar(Attr(str, required=False), f, name="opt")
    acc.store("x")
    assert acc.exists()
    acc.store(None)
    assert "opt" not in attrs_of(h5path)
    assert not acc.exists()
    with pytest.raises(MissingDataError, match="'opt' is absent from"):
        acc.load()


def test_scalar_never_serves_stale_values(h5path):
    f = H5File(h5path)
    acc = Scalar(Attr(str), f, name="s")
    acc.store("one")
    assert acc.load() == "one"
    acc.store("two")
    assert acc.load() == "two"  # TVB returns "one" here (reference §4.1)
    with f:
        acc.store("three")
        assert acc.load() == "three"
        with h5py.File(h5path, "r") as other:  # another handle sees it after flush
            f.flush()
            assert other.attrs["s"] == "three"


def test_scalar_type_errors_write_nothing(h5path, unchanged):
    f = H5File(h5path)
    acc = Scalar(Attr(int), f, name="n")
    acc.store(1)
    check = unchanged(h5path)
    with pytest.raises(DtypeError, match="expects a int: got str 'x'"):
        acc.store("x")
    with pytest.raises(InvalidInputError, match="required"):
        acc.store(None)
    with pytest.raises(InvalidInputError, match="HDF5 attribute"):
        Scalar(Attr(object), f, name="o").store({1, 2})
    check()


def test_scalar_wrong_type_on_disk(h5path):
    with h5py.File(h5path, "w") as raw:
        raw.attrs["n"] = "not a number"
        raw.attrs["f"] = 1.5
    f = H5File(h5path, mode="r")
    with pytest.raises(FormatError, match=r"attribute 'n' in .*'not a number'"):
        Scalar(Attr(int), f, name="n").load()
    with pytest.raises(FormatError, match="expected an integer"):
        Scalar(Attr(int), f, name="f").load()
    assert Scalar(Attr(float), f, name="f").load() == 1.5
    assert Scalar(Attr(object), f, name="f").load() == 1.5


def test_scalar_arrays_and_lists(h5path):
    f = H5File(h5path)
    acc = Scalar(Attr(list), f, name="l")
    acc.store([1, 2, 3])
    assert acc.load() == [1, 2, 3]
    arr = Scalar(Attr(np.ndarray), f, name="a")
    arr.store(np.array([1.5, 2.5]))
    np.testing.assert_array_equal(arr.load(), [1.5, 2.5])


def test_fixed_length_byte_attributes_decode_cleanly(h5path):
    with h5py.File(h5path, "w") as raw:
        raw.attrs["s"] = np.bytes_(b"abc")
        raw.attrs["TVB_written_by"] = np.bytes_(b"x.Y")
    f = H5File(h5path, mode="r", profile="native")
    assert Scalar(Attr(str), f, name="s").load() == "abc"  # TVB gives "b'abc'"
    assert f.get_metadata_param("s") == "abc"


def test_accessor_needs_a_name():
    f = H5File("unused.h5")
    with pytest.raises(InvalidInputError, match="needs a name"):
        Scalar(Attr(int), f)
    with pytest.raises(InvalidInputError, match="needs a field declaration"):
        Scalar(int, f, name="x")
    acc = Scalar(Volume.count, f, name="renamed")
    assert acc.name == "renamed" and acc.is_bound
    assert "renamed" in repr(acc)


# --------------------------------------------------------- Uuid and Reference
def test_uuid_native_and_any_form_on_read(h5path):
    f = H5File(h5path)
    gid = uuid.uuid4()
    acc = Uuid(Attr(uuid.UUID), f, name="u")
    acc.store(gid)
    assert attrs_of(h5path)["u"] == str(gid)
    assert acc.load() == gid
    for form in (gid.hex, gid.urn, str(gid).upper()):
        with h5py.File(h5path, "r+") as raw:
            raw.attrs["u"] = form
        assert acc.load() == gid
    with pytest.raises(DtypeError, match=r"expects a uuid\.UUID"):
        acc.store(str(gid))
    with h5py.File(h5path, "r+") as raw:
        raw.attrs["u"] = "nonsense"
    with pytest.raises(FormatError, match="expected a UUID"):
        acc.load()


def test_reference_accepts_objects_and_uuids(h5path, unchanged):
    f = H5File(h5path)
    ref = Reference(Attr(HasTraits, required=False), f, name="r")
    target = Tiny(data=[1.0], count=1)
    ref.store(target)
    assert ref.load() == target.gid
    ref.store(target.gid)
    assert ref.load() == target.gid
    check = unchanged(h5path)
    with pytest.raises(DtypeError, match="UUID"):
        ref.store("not-a-gid")
    check()
    ref.store(None)
    assert not ref.exists()
    required = Reference(Attr(HasTraits), f, name="r2")
    with pytest.raises(InvalidInputError, match="required reference"):
        required.store(None)


def test_reference_list(h5path):
    a, b = Tiny(), Tiny()
    f = ListingH5(h5path)
    f.store(Listing(links=[a, b.gid]))
    assert json.loads(attrs_of(h5path)["links"]) == [a.gid.hex, b.gid.hex]
    assert f.links.load() == [a.gid, b.gid]
    refs = f.gather_references()
    assert [(t.field_name, v) for t, v in refs] == [("links", [a.gid, b.gid])]
    loaded = f.load_into(Listing())
    assert loaded.links is None  # references are never loaded in bulk
    with pytest.raises(DtypeError):
        f.links.store([object()])
    with pytest.raises(DtypeError):
        f.links.store("abc")


# ------------------------------------------------------------- Enum and Json
def test_enum_round_trip(h5path):
    f = VolumeSubH5(h5path)
    f.color.store(Color.GREEN)
    assert attrs_of(h5path)["color"] == "green"
    assert f.color.load() is Color.GREEN
    with h5py.File(h5path, "r+") as raw:
        raw.attrs["color"] = "blue"
    with pytest.raises(FormatError, match="no member"):
        f.color.load()


class ArrayEncoder(json.JSONEncoder):
    def default(self, o):
        if isinstance(o, np.ndarray):
            return {"__array__": o.tolist()}
        return super().default(o)


class ArrayDecoder(json.JSONDecoder):
    def __init__(self, **kwargs):
        super().__init__(object_hook=self.hook, **kwargs)

    @staticmethod
    def hook(obj):
        return np.array(obj["__array__"]) if "__array__" in obj else obj


def test_json_round_trip_and_plugins(h5path, unchanged):
    f = H5File(h5path)
    plain = Json(Attr(dict), f, name="d")
    plain.store({"k": [1, 2], "n": None})
    assert attrs_of(h5path)["d"] == '{"k": [1, 2], "n": null}'
    assert plain.load() == {"k": [1, 2], "n": None}
    custom = Json(
        Attr(dict), f, name="c", json_encoder=ArrayEncoder, json_decoder=ArrayDecoder
    )
    custom.store({"a": np.arange(3)})
    np.testing.assert_array_equal(custom.load()["a"], [0, 1, 2])
    check = unchanged(h5path)
    with pytest.raises(InvalidInputError, match="cannot be encoded as JSON"):
        plain.store({"a": np.arange(3)})
    check()


def test_json_refuses_non_str_keys_at_any_depth(h5path, unchanged):
    # Was bug json-keys: {0: 1} was stored and loaded back as {"0": 1}.
    f = H5File(h5path)
    plain = Json(Attr(object), f, name="d")
    plain.store({"ok": 1})
    check = unchanged(h5path)
    for bad, where in (
        ({0: 1}, "top level"),
        ({"a": [{"b": {None: 1}}]}, "['a'][0]['b']"),
        ([({1.5: 2},)], "[0][0]"),
    ):
        with pytest.raises(InvalidInputError, match="key") as info:
            plain.store(bad)
        assert where in str(info.value)
    check()
    assert plain.load() == {"ok": 1}

    class SetEncoder(json.JSONEncoder):
        def default(self, o):
            return {1: sorted(o)} if isinstance(o, set) else super().default(o)

    custom = Json(Attr(object), f, name="c", json_encoder=SetEncoder)
    with pytest.raises(InvalidInputError, match="set encoded as JSON"):
        custom.store({"s": {1, 2}})
    check()


@pytest.mark.parametrize("value", [2**63, -(2**63) - 1, 10**30])
def test_ints_beyond_int64_are_refused_before_writing(h5path, unchanged, value):
    # Was bug int-overflow: h5py raised a bare OverflowError.
    f = H5File(h5path)
    count = Scalar(Attr(int), f, name="n")
    count.store(2**63 - 1)
    check = unchanged(h5path)
    with pytest.raises(InvalidInputError, match="int64") as info:
        count.store(value)
    assert "'n'" in str(info.value)
    with pytest.raises(InvalidInputError, match="int64"):
        f.store_metadata_param("big", value)
    check()
    assert count.load() == 2**63 - 1


def test_json_none_is_absent_natively_and_null_for_tvb(tmp_path):
    native = H5File(tmp_path / "n.h5")
    opt = Json(Attr(list, required=False), native, name="j")
    opt.store(None)
    assert "j" not in attrs_of(tmp_path / "n.h5")
    tvb = H5File(tmp_path / "t.h5", profile="tvb")
    opt = Json(Attr(list, required=False), tvb, name="j")
    opt.store(None)
    assert attrs_of(tmp_path / "t.h5")["TVB_j"] == "null"
    assert opt.load() is None
    with pytest.raises(MissingDataError):
        Json(Attr(list), tvb, name="absent").load()


# --------------------------------------------------------------- bulk store
def test_store_and_load_into_round_trip(h5path):
    parent = Tiny()
    v = make_volume(
        series=np.ones((2, 2)), color=Color.RED, meta={"a": 1}, parent=parent, flag=False
    )
    f = VolumeSubH5(h5path)
    f.store(v)
    loaded = VolumeSubH5(h5path, mode="r").load_into(Volume())
    assert loaded.gid == v.gid
    np.testing.assert_array_equal(loaded.origin, v.origin)
    np.testing.assert_array_equal(loaded.series, v.series)
    assert (loaded.voxel_unit, loaded.count, loaded.flag) == ("µm", 4, False)
    assert loaded.color is Color.RED and loaded.meta == {"a": 1}
    assert loaded.parent is None  # references are not followed
    assert f.parent.load() == parent.gid
    assert f.gather_references() == [(Volume.parent, parent.gid)]


def test_independent_accessors_are_skipped_in_bulk(h5path):
    f = VolumeH5(h5path)
    f.independent_int.store(11)
    f.store(make_volume())
    assert attrs_of(h5path)["independent_int"] == 11
    assert f.independent_int.load() == 11
    f2 = VolumeH5(h5path, mode="w")
    f2.store(make_volume())
    assert "independent_int" not in attrs_of(h5path)


def test_bound_accessor_with_name_override(h5path):
    class Renamed(H5File, register=False):
        def __init__(self, path, **kwargs):
            super().__init__(path, **kwargs)
            self.origin = DataSet(Volume.origin, self, name="origin_mm")

    Renamed(h5path).store(make_volume())
    with h5py.File(h5path, "r") as raw:
        assert "origin_mm" in raw and "origin" not in raw
    assert Renamed(h5path).load_into(Volume()).origin.tolist() == [1.0, 2.0, 3.0]


def test_scalars_only_and_store_references(h5path):
    v = make_volume(series=np.ones((1, 2)), parent=Tiny())
    f = VolumeSubH5(h5path)
    f.store(v, scalars_only=True, store_references=False)
    with h5py.File(h5path, "r") as raw:
        assert list(raw) == []
        assert "parent" not in raw.attrs
        assert raw.attrs["count"] == 4 and raw.attrs["gid"] == str(v.gid)
    f.store(v, scalars_only=True)
    assert attrs_of(h5path)["parent"] == str(v.parent.gid)


def test_store_validates_everything_before_writing(h5path, unchanged):
    f = VolumeSubH5(h5path)
    f.store(make_volume())
    check = unchanged(h5path)
    bad = make_volume()
    bad.__dict__["count"] = "four"  # bypasses field validation, like a stale object
    with pytest.raises(DtypeError, match=r"Volume\.count"):
        f.store(bad)
    missing = make_volume()
    missing.__dict__["origin"] = None
    with pytest.raises(InvalidInputError, match=r"Volume\.origin is required"):
        f.store(missing)
    with pytest.raises(InvalidInputError, match="has no field"):
        f.store(object())
    check()


def test_load_into_missing_fields(h5path):
    f = VolumeSubH5(h5path)
    f.voxel_unit.store("mm")
    f.gid.store(uuid.uuid4())
    with pytest.raises(MissingDataError, match="'origin' is absent"):
        f.load_into(Volume())
    f.origin.store(np.zeros(3))
    v = f.load_into(Volume(count=9))
    assert v.count is None and v.series is None  # optional and absent


def test_load_into_rejects_values_that_do_not_fit(h5path):
    f = VolumeSubH5(h5path)
    f.store(make_volume())
    with h5py.File(h5path, "r+") as raw:
        del raw["origin"]
        raw["origin"] = np.zeros(4)
    with pytest.raises(FormatError, match=r"'origin' in .* does not fit Volume.origin"):
        f.load_into(Volume())


def test_iter_accessors_order_and_inheritance():
    f = VolumeSubH5("unused.h5")
    names = [a.name for a in f.iter_accessors()]
    assert names[:4] == ["gid", "written_by", "create_date", "type"]
    assert names[-9:] == [
        "origin",
        "voxel_unit",
        "series",
        "independent_int",
        "count",
        "flag",
        "color",
        "meta",
        "parent",
    ]
    assert [d.name for d in f.iter_datasets()] == ["origin", "series"]


def test_declare_fields_builds_accessors_from_types(h5path):
    class Auto(H5File, register=False):
        def __init__(self, path, **kwargs):
            super().__init__(path, **kwargs)
            self.declare_fields(Volume, exclude=("meta",))

    f = Auto(h5path)
    kinds = {a.name: type(a).__name__ for a in f.iter_accessors() if a.is_bound}
    assert kinds == {
        "gid": "Uuid",
        "origin": "DataSet",
        "voxel_unit": "Scalar",
        "series": "DataSet",
        "count": "Scalar",
        "flag": "Scalar",
        "color": "Enum",
        "parent": "Reference",
    }
    f.store(make_volume(color=Color.RED))
    assert f.load_into(Volume()).color is Color.RED


# --------------------------------------------------- metadata and generic attrs
def test_metadata_params(tmp_path):
    for profile, key in (("native", "k"), ("tvb", "TVB_k")):
        path = tmp_path / f"{profile}.h5"
        f = H5File(path, profile=profile)
        f.store_metadata_param("k", True)
        assert f.get_metadata_param("k") is True
        assert key in attrs_of(path)
        f.store_metadata_param("n", 3)
        assert f.get_metadata_param("n") == 3
        f.store_metadata_param("k", None)
        assert f.get_metadata_param("k") is None
        assert key not in attrs_of(path)


def test_generic_attributes_round_trip(h5path):
    f = H5File(h5path)
    burst = uuid.uuid4()
    f.store_generic_attributes(
        GenericAttributes(subject="s1", user_tag_1="t", parent_burst=burst, visible=False)
    )
    ga = f.load_generic_attributes()
    assert (ga.subject, ga.user_tag_1, ga.parent_burst, ga.visible) == (
        "s1",
        "t",
        burst,
        False,
    )
    assert ga.create_date is not None
    assert attrs_of(h5path)["visible"] == np.False_
    # TVB's merge: empty strings do not erase stored ones.
    merged = GenericAttributes(subject="keep")
    merged.fill_from(GenericAttributes(subject="", state="new", invalid=True))
    assert (merged.subject, merged.state, merged.invalid) == ("keep", "new", True)


def test_generic_attributes_defaults_when_absent(h5path):
    H5File(h5path).store_metadata_param("x", 1)
    assert H5File(h5path).load_generic_attributes() == GenericAttributes()


def test_narray_field_on_dataset_named_by_field():
    f = H5File("unused.h5")
    ds = DataSet(NArray(dtype=int), f, name="ints")
    assert ds.name == "ints" and not ds.is_bound
