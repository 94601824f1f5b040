"""The TVB profile: TVB 2.x's exact on-disk conventions, for writing and reading.

Select it with ``H5File(path, profile="tvb")`` or by subclassing :class:`TVBH5File`.
It writes what TVB 2.x (data version 5) writes:

* ``TVB_``-prefixed attributes, everything flat at the root;
* booleans as the text ``"bool:True"``/``"bool:False"``, gids as ``"urn:uuid:..."``;
* ``TVB_Data_version`` = 5 (int64) and ``TVB_written_by``;
* on every dataset the statistics ``TVB_Minimum``, ``TVB_Maximum``, ``TVB_Mean``,
  ``TVB_IsFinite`` and ``TVB_HasComplex`` (``''`` when they cannot be computed);
* sparse matrices as ``<name>data``, ``<name>indptr``, ``<name>indices`` plus a
  placeholder dataset ``<name>`` holding their attributes.

Files TVB wrote are recognised by their ``TVB_`` headers. Their ``written_by`` values
(``tvb.adapters.datatypes.h5.connectivity_h5.ConnectivityH5`` ...) are resolved through
the format registry — never imported. :class:`ConnectivityH5` is shipped registered under
TVB's name; register your own classes for other TVB formats with ``name=``/``aliases=``.
"""

from __future__ import annotations

import uuid
from typing import Any

from .accessors import Json, Scalar
from .datasets import DataSet
from .encoding import Profile, register_profile
from .file import H5File
from .traits import Attr, HasTraits, NArray

#: The data version TVB 2.x writes and reads (``TVB_Data_version``).
TVB_DATA_VERSION = 5
#: TVB's ``create_date`` format.
TVB_DATE_FORMAT = "%Y-%m-%d,%H-%M-%S.%f"

#: The TVB 2.x profile.
TVB = Profile(
    name="tvb",
    prefix="TVB_",
    version_key="Data_version",
    fixed_version=TVB_DATA_VERSION,
    bools_as_text=True,
    uuid_as_urn=True,
    stat_keys={
        "minimum": "Minimum",
        "maximum": "Maximum",
        "mean": "Mean",
        "is_finite": "IsFinite",
        "has_complex": "HasComplex",
    },
    stats_count=False,
    empty_stat_as_text=True,
    flat_sparse=True,
    json_none_as_null=True,
    date_format=TVB_DATE_FORMAT,
    store_writes_type=False,
)
register_profile(TVB)


class TVBH5File(H5File, aliases=("tvb.core.neotraits._h5core.H5File",)):
    """Base class of formats that write TVB's conventions by default.

    Give subclasses TVB's fully qualified class name (``name="tvb.adapters..."``) when the
    files must be loadable by TVB itself: TVB imports the ``written_by`` value.
    """

    default_profile = "tvb"


def tvb_file_name(format_class: type[H5File], gid: uuid.UUID) -> str:
    """TVB's file name for an object: ``<ClassName without H5>_<gid.hex>.h5``."""
    return f"{format_class.file_name_base()}_{gid.hex}.h5"


class Connectivity(HasTraits, name="tvb.datatypes.connectivity.Connectivity"):
    """The fields of TVB's ``Connectivity`` datatype, as stored on disk."""

    region_labels = NArray(dtype=str, ndim=1, required=False, doc="Region names")
    weights = NArray(dtype=float, ndim=2, doc="Connection strengths")
    undirected = Attr(bool, default=False, doc="Whether weights are symmetric")
    tract_lengths = NArray(dtype=float, ndim=2, doc="Tract lengths (mm)")
    centres = NArray(dtype=float, ndim=2, doc="Region centres (mm)")
    cortical = NArray(dtype=bool, ndim=1, required=False, doc="Cortical regions")
    hemispheres = NArray(dtype=bool, ndim=1, required=False, doc="Right hemisphere")
    orientations = NArray(dtype=float, ndim=2, required=False, doc="Mean orientations")
    areas = NArray(dtype=float, ndim=1, required=False, doc="Region areas (mm²)")
    number_of_regions = Attr(int, default=0, required=False)
    number_of_connections = Attr(int, default=0, required=False)
    parent_connectivity = Attr(str, required=False, doc="Gid of the parent, hex")
    saved_selection = Attr(list, required=False, doc="Selected region indices")


class ConnectivityH5(
    TVBH5File, name="tvb.adapters.datatypes.h5.connectivity_h5.ConnectivityH5"
):
    """TVB's Connectivity file format: reads TVB's files, and TVB reads the ones it
    writes.

    ``region_labels`` are stored as TVB stores them (variable-length UTF-8). TVB 2.10
    decodes them as ASCII on load, so labels meant for TVB should be ASCII; see
    :doc:`/tvb-profile`.
    """

    def __init__(self, path: Any, **kwargs: Any) -> None:
        super().__init__(path, **kwargs)
        self.region_labels = DataSet(Connectivity.region_labels, self)
        self.weights = DataSet(Connectivity.weights, self)
        self.undirected = Scalar(Connectivity.undirected, self)
        self.tract_lengths = DataSet(Connectivity.tract_lengths, self)
        self.centres = DataSet(Connectivity.centres, self)
        self.cortical = DataSet(Connectivity.cortical, self)
        self.hemispheres = DataSet(Connectivity.hemispheres, self)
        self.orientations = DataSet(Connectivity.orientations, self)
        self.areas = DataSet(Connectivity.areas, self)
        self.number_of_regions = Scalar(Connectivity.number_of_regions, self)
        self.number_of_connections = Scalar(Connectivity.number_of_connections, self)
        self.parent_connectivity = Scalar(Connectivity.parent_connectivity, self)
        self.saved_selection = Json(Connectivity.saved_selection, self)
