"""bsb_store.h5: the declarative HDF5 format layer.

Declare datatypes with :class:`HasTraits`/:class:`Attr`/:class:`NArray`, describe how they
sit in a file (or in a group of a bigger file) with an :class:`H5File` subclass and its
accessors (:class:`DataSet`, :class:`Scalar`, :class:`Json`, :class:`Reference`,
:class:`SparseMatrix` ...), and read and write them with explicit open modes. Files are
self-describing (``written_by``, a format version) and resolved back to their classes
through a registry. The ``"tvb"`` profile reads and writes TVB 2.x's conventions.

This package depends only on the standard library, numpy, h5py and
:mod:`bsb_store.exceptions` (scipy, optionally, for sparse matrices).
"""

from __future__ import annotations

from . import registry
from .accessors import Accessor, Enum, Json, Reference, ReferenceList, Scalar, Uuid
from .datasets import DataSet, SparseMatrix, SparseMetadata
from .encoding import NATIVE, TEXT_DTYPE, Profile, get_profile
from .file import H5File
from .generic import GenericAttributes
from .registry import register, register_datatype
from .stats import Statistics
from .traits import Attr, EnumAttr, HasTraits, NArray, lossless_cast
from .tvb import TVB, TVBH5File

#: TVB's name for :class:`Statistics`.
DataSetMetaData = Statistics
#: The dtype of text datasets (variable-length UTF-8), TVB's ``STORE_STRING``.
STORE_STRING = TEXT_DTYPE

determine_type = H5File.determine_type
h5_class_from_file = H5File.h5_class_from_file
from_file = H5File.from_file

__all__ = [
    "NATIVE",
    "STORE_STRING",
    "TEXT_DTYPE",
    "TVB",
    "Accessor",
    "Attr",
    "DataSet",
    "DataSetMetaData",
    "Enum",
    "EnumAttr",
    "GenericAttributes",
    "H5File",
    "HasTraits",
    "Json",
    "NArray",
    "Profile",
    "Reference",
    "ReferenceList",
    "Scalar",
    "SparseMatrix",
    "SparseMetadata",
    "Statistics",
    "TVBH5File",
    "Uuid",
    "determine_type",
    "from_file",
    "get_profile",
    "h5_class_from_file",
    "lossless_cast",
    "register",
    "register_datatype",
    "registry",
]
