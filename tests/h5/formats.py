"""Datatypes and formats shared by the h5 tests.

``rtmod.*`` names mirror the classes TVB wrote the fixtures in ``tests/data/tvb`` with
(reference section 3.7): the fixtures' ``TVB_written_by``/``TVB_type`` values resolve to
these classes through the registry.
"""

from __future__ import annotations

import enum
import uuid

import numpy as np

from bsb_store.h5 import (
    Attr,
    DataSet,
    Enum,
    EnumAttr,
    H5File,
    HasTraits,
    Json,
    NArray,
    Reference,
    ReferenceList,
    Scalar,
    SparseMatrix,
    TVBH5File,
    Uuid,
)


class Color(enum.Enum):
    RED = "red"
    GREEN = "green"


class Volume(HasTraits):
    """A small datatype in the spirit of TVB's Volume."""

    origin = NArray(dtype=float, shape=(3,), doc="Position of voxel 0")
    voxel_unit = Attr(str, default="mm")
    series = NArray(dtype=float, ndim=2, required=False)
    count = Attr(int, required=False)
    flag = Attr(bool, required=False)
    color = EnumAttr(Color, required=False)
    meta = Attr(dict, required=False)
    parent = Attr(HasTraits, required=False)


class VolumeH5(H5File):
    """A native format written TVB-style: accessors assigned in ``__init__``."""

    def __init__(self, path, **kwargs):
        super().__init__(path, **kwargs)
        self.origin = DataSet(Volume.origin, self)
        self.voxel_unit = Scalar(Volume.voxel_unit, self)
        self.series = DataSet(Volume.series, self, expand_dimension=0)
        self.independent_int = Scalar(Attr(int), self, name="independent_int")


class VolumeSubH5(VolumeH5):
    """Inheritance: the base accessors plus more, flattened on disk."""

    def __init__(self, path, **kwargs):
        super().__init__(path, **kwargs)
        self.count = Scalar(Volume.count, self)
        self.flag = Scalar(Volume.flag, self)
        self.color = Enum(Volume.color, self)
        self.meta = Json(Volume.meta, self)
        self.parent = Reference(Volume.parent, self)


def make_volume(**kwargs) -> Volume:
    values = dict(origin=np.array([1.0, 2.0, 3.0]), voxel_unit="µm", count=4, flag=True)
    values.update(kwargs)
    return Volume(**values)


class Tiny(HasTraits, name="rtmod.Tiny"):
    data = NArray(dtype=float)
    count = Attr(int)


class TinyH5(TVBH5File, name="rtmod.TinyH5"):
    def __init__(self, path, **kwargs):
        super().__init__(path, **kwargs)
        self.data = DataSet(Tiny.data, self)
        self.count = Scalar(Tiny.count, self)


class Rich(HasTraits, name="rtmod.Rich"):
    data = NArray(dtype=float, ndim=2)
    extra_ds = NArray(dtype=float)
    ints = NArray(dtype=np.int64)
    labels = NArray(dtype="S32")
    series = NArray(dtype=float, ndim=2, required=False)
    mtx = Attr(object, required=False)
    count = Attr(int)
    ratio = Attr(float)
    name = Attr(str)
    flag = Attr(bool)
    child = Attr(Tiny, required=False)
    other = Attr(uuid.UUID, required=False)
    meta = Attr(dict, required=False)
    eq = Attr(dict, required=False)
    opt = Attr(str, required=False)


class RichH5(TVBH5File, name="rtmod.RichH5"):
    def __init__(self, path, **kwargs):
        super().__init__(path, **kwargs)
        self.data = DataSet(Rich.data, self)
        self.count = Scalar(Rich.count, self)
        self.ratio = Scalar(Rich.ratio, self)
        self.name = Scalar(Rich.name, self)
        self.flag = Scalar(Rich.flag, self)
        self.child = Reference(Rich.child, self)
        self.other = Uuid(Rich.other, self)
        self.meta = Json(Rich.meta, self)


class RichSubH5(RichH5, name="rtmod.RichSubH5"):
    def __init__(self, path, **kwargs):
        super().__init__(path, **kwargs)
        self.extra_ds = DataSet(Rich.extra_ds, self)
        self.ints = DataSet(Rich.ints, self)
        self.labels = DataSet(Rich.labels, self)
        self.series = DataSet(Rich.series, self, expand_dimension=0, chunks=(2, 2))
        self.mtx = SparseMatrix(Rich.mtx, self)
        self.eq = Json(Rich.eq, self)
        self.opt = Scalar(Rich.opt, self)
        self.independent_int = Scalar(Attr(int), self, name="independent_int")


class Listing(HasTraits):
    links = Attr(list, required=False)


class ListingH5(H5File):
    def __init__(self, path, **kwargs):
        super().__init__(path, **kwargs)
        self.links = ReferenceList(Listing.links, self)
