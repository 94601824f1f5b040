"""Field declarations: Attr, NArray, HasTraits and the lossless-cast rule."""

from __future__ import annotations

import uuid

import numpy as np
import pytest

from bsb_store.exceptions import DtypeError, InvalidInputError, ShapeError
from bsb_store.h5 import Attr, EnumAttr, HasTraits, NArray, lossless_cast, registry

from .formats import Color, Volume


def test_set_name_binds_field_to_owner():
    assert Volume.origin.field_name == "origin"
    assert Volume.origin.owner is Volume
    assert Volume.origin.qualified_name == "Volume.origin"
    unbound = Attr(int)
    assert unbound.field_name is None
    assert "unbound" in unbound.qualified_name


def test_defaults_and_doc():
    v = Volume()
    assert v.voxel_unit == "mm"
    assert v.origin is None
    assert Volume.origin.doc == "Position of voxel 0"
    assert Volume.voxel_unit.default == "mm"


@pytest.mark.parametrize(
    ("ftype", "value", "expected"),
    [
        (int, 3, 3),
        (int, np.int32(3), 3),
        (float, 2, 2.0),
        (float, np.float32(0.5), 0.5),
        (bool, np.bool_(True), True),
        (str, "héllo", "héllo"),
        (uuid.UUID, uuid.UUID(int=5), uuid.UUID(int=5)),
    ],
)
def test_attr_accepts_and_converts(ftype, value, expected):
    class T(HasTraits, register=False):
        x = Attr(ftype)

    t = T(x=value)
    assert t.x == expected
    assert type(t.x) is type(expected)


@pytest.mark.parametrize(
    ("ftype", "value"),
    [
        (int, True),
        (int, 1.5),
        (float, True),
        (float, "1"),
        (bool, 1),
        (str, b"x"),
        (int, None),
    ],
)
def test_attr_rejects_wrong_types(ftype, value):
    class T(HasTraits, register=False):
        x = Attr(ftype)

    t = T()
    with pytest.raises((DtypeError, InvalidInputError)) as err:
        t.x = value
    assert "T.x" in str(err.value)
    assert t.x is None


def test_required_none_and_optional_none():
    class T(HasTraits, register=False):
        req = Attr(int)
        opt = Attr(int, required=False)

    t = T(opt=None)
    assert t.opt is None
    with pytest.raises(InvalidInputError, match=r"T\.req is required"):
        t.req = None


def test_choices():
    class T(HasTraits, register=False):
        unit = Attr(str, choices=("mm", "um"))

    assert T(unit="um").unit == "um"
    with pytest.raises(InvalidInputError, match="one of"):
        T(unit="km")


def test_enum_attr():
    class T(HasTraits, register=False):
        c = EnumAttr(Color)

    assert T(c=Color.RED).c is Color.RED
    with pytest.raises(DtypeError):
        T(c="red")


def test_narray_converts_lists_and_checks_shape():
    v = Volume(origin=[1, 2, 3])
    assert v.origin.dtype == np.float64
    np.testing.assert_array_equal(v.origin, [1.0, 2.0, 3.0])
    with pytest.raises(
        ShapeError, match=r"Volume.origin expects 1 dimension\(s\) of shape"
    ):
        Volume(origin=np.zeros((3, 1)))
    with pytest.raises(ShapeError, match=r"expects shape \(3,\): got shape \(4,\)"):
        Volume(origin=np.zeros(4))
    with pytest.raises(DtypeError, match="expects an array"):
        Volume(origin="abc")


def test_narray_wildcard_dimensions():
    field = NArray(shape=(None, 3))
    field.check_shape((10, 3))
    with pytest.raises(ShapeError, match=r"\(N, 3\)"):
        field.check_shape((10, 2))
    field.check_shape((10, 5), free_axis=1)  # a growing axis may differ


def test_narray_dtype_rules():
    assert NArray(dtype=str).is_text
    assert NArray(dtype=str).dtype.kind == "O"
    assert NArray(dtype=None).dtype is None
    with pytest.raises(InvalidInputError):
        NArray(shape=(2, 3), ndim=3)


@pytest.mark.parametrize(
    ("src", "dst"),
    [
        (np.array([1, 2], dtype=np.int8), np.float64),
        (np.array([1, 2]), np.float64),
        (np.array([1.5], dtype=np.float32), np.float64),
        (np.array([True]), np.int64),
        (np.array([1.0]), np.complex128),
        (np.array([2**53]), np.float64),
        (np.array([b"ab"]), "S4"),
        (np.array(["ab"]), "S4"),
    ],
)
def test_lossless_cast_accepts(src, dst):
    out = lossless_cast(src, np.dtype(dst), "x")
    assert out.dtype == np.dtype(dst)
    if src.dtype.kind == "U":
        src = np.char.encode(src, "ascii")
    assert out.tolist() == src.astype(out.dtype).tolist()
    assert np.array_equal(out, src)


@pytest.mark.parametrize(
    ("src", "dst"),
    [
        (np.array([1.5]), np.int64),
        (np.array([1 + 1j]), np.float64),
        (np.array([1.0]), np.float32),
        (np.array([2**53 + 1]), np.float64),
        (np.array([1]), np.bool_),
        (np.array(["a"]), np.float64),
        (np.array([b"abcdef"]), "S4"),
        (np.array(["é"]), "S4"),
        (np.array([1.0]), str),
    ],
)
def test_lossless_cast_refuses(src, dst):
    dtype = NArray(dtype=dst).dtype
    with pytest.raises(DtypeError, match=r"losslessly|rounding"):
        lossless_cast(src, dtype, "field x")


def test_lossless_cast_text():
    text = NArray(dtype=str).dtype
    out = lossless_cast(np.array([b"caf\xc3\xa9"]), text, "x")
    assert out.tolist() == ["café"]
    out = lossless_cast(np.array(["a", b"b"], dtype=object), text, "x")
    assert out.tolist() == ["a", "b"]
    assert lossless_cast(np.array([1.5]), None, "x").dtype == np.float64


def test_declarative_attrs_inherit_in_order():
    class A(HasTraits, register=False):
        a = Attr(int)
        b = Attr(int)

    class B(A, register=False):
        c = Attr(int)

    assert A.declarative_attrs == ("gid", "a", "b")
    assert B.declarative_attrs == ("gid", "a", "b", "c")
    assert B.trait("a") is A.a
    with pytest.raises(InvalidInputError):
        B.trait("zzz")


def test_constructor_rejects_unknown_fields_and_copies_defaults():
    default = np.zeros(2)

    class T(HasTraits, register=False):
        x = NArray(default=default)

    with pytest.raises(InvalidInputError, match="has no field 'y'"):
        T(y=1)
    a, b = T(), T()
    a.x[0] = 5
    assert b.x[0] == 0 and default[0] == 0


def test_gid_is_unique_and_settable():
    a, b = Volume(), Volume()
    assert isinstance(a.gid, uuid.UUID) and a.gid != b.gid
    gid = uuid.uuid4()
    assert Volume(gid=gid).gid == gid


def test_datatypes_register_on_definition():
    class Registered(HasTraits, name="tests.h5.Registered", aliases=("old.Registered",)):
        pass

    assert registry.lookup_datatype("tests.h5.Registered") is Registered
    assert registry.lookup_datatype("old.Registered") is Registered
    assert Registered.registered_name == "tests.h5.Registered"
    assert registry.lookup_datatype(Volume.registered_name) is Volume
    assert Volume.registered_name.endswith("formats.Volume")
