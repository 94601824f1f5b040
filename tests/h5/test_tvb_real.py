"""Round trips against the real TVB (tvb-framework 2.x), when it is importable.

Skipped unless ``tvb`` is installed (it is never a dependency; reference §6 describes a
lean install: ``pip install --no-deps tvb-framework tvb-library tvb-storage`` plus numpy,
scipy, h5py, six, pyAesCrypt, requests, kubernetes; run with ``HOME`` set to a temporary
directory because importing TVB creates ``~/.tvb-temp``).

Both directions: TVB writes → our reader loads; our TVB profile writes → TVB's
``H5File.from_file(...).load_into(...)`` loads. TVB's own warnings are silenced around
its calls (they are not ours to fix).
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager

import h5py
import numpy as np
import pytest

tvb_h5 = pytest.importorskip("tvb.core.neotraits.h5")
tvb_api = pytest.importorskip("tvb.basic.neotraits.api")

from bsb_store.h5 import (  # noqa: E402
    Attr,
    DataSet,
    H5File,
    HasTraits,
    NArray,
    Scalar,
    TVBH5File,
)
from bsb_store.h5.tvb import Connectivity, ConnectivityH5  # noqa: E402


@contextmanager
def tvb_quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


# TVB side: TVB imports ``<module>.<class>`` from written_by, and this module is imported.
class TvbTiny(tvb_api.HasTraits):
    data = tvb_api.NArray(dtype=float)
    count = tvb_api.Int()


class TvbTinyH5(tvb_h5.H5File):
    def __init__(self, path):
        super().__init__(path)
        self.data = tvb_h5.DataSet(TvbTiny.data, self)
        self.count = tvb_h5.Scalar(TvbTiny.count, self)


# Our side, registered under the names TVB writes and imports.
class OurTiny(HasTraits, name=f"{__name__}.TvbTiny"):
    data = NArray(dtype=float)
    count = Attr(int)


class OurTinyH5(TVBH5File, name=f"{__name__}.TvbTinyH5"):
    def __init__(self, path, **kwargs):
        super().__init__(path, **kwargs)
        self.data = DataSet(OurTiny.data, self)
        self.count = Scalar(OurTiny.count, self)


def test_tvb_writes_we_read(tmp_path):
    path = tmp_path / "tiny.h5"
    with tvb_quiet():
        original = TvbTiny(data=np.array([[1.0, 2.0], [3.0, 4.5]]), count=7)
        f = TvbTinyH5(str(path))
        f.store(original)
        f.close()
    ours = H5File.from_file(path)
    assert type(ours) is OurTinyH5
    loaded = ours.load_into(OurTiny())
    np.testing.assert_array_equal(loaded.data, original.data)
    assert loaded.count == 7 and loaded.gid == original.gid
    assert ours.data.get_cached_metadata().mean == 2.625


def test_tvb_appends_we_read(tmp_path):
    path = tmp_path / "series.h5"
    with tvb_quiet():
        f = TvbTinyH5(str(path))
        f.store(TvbTiny(data=np.zeros((0, 2)), count=1), scalars_only=True)
        for value in (0.0, 1.0, 2.0):
            f.data.append(np.full((2, 2), value), grow_dimension=None)
        f.close()
    data = OurTinyH5(path, mode="r").data
    assert data.shape[0] * data.shape[1] == 12
    stats = data.get_cached_metadata()
    assert (stats.minimum, stats.maximum) == (0.0, 2.0)


def test_we_write_tvb_reads(tmp_path):
    path = tmp_path / "tiny.h5"
    ours = OurTiny(data=np.array([[1.0, 2.0], [3.0, 4.5]]), count=7)
    OurTinyH5(path).store(ours)
    with tvb_quiet():
        f = tvb_h5.H5File.from_file(str(path))
        assert type(f) is TvbTinyH5
        loaded = TvbTiny()
        f.load_into(loaded)  # TVB fills the instance in place and returns None
        meta = f.data.get_cached_metadata()
        f.close()
    np.testing.assert_array_equal(loaded.data, ours.data)
    assert loaded.count == 7 and loaded.gid == ours.gid
    assert (meta.min, meta.max, meta.mean) == (1.0, 4.5, 2.625)


def _connectivity(cls, labels):
    weights = np.array([[0.0, 1.0], [1.0, 0.0]])
    return cls(
        region_labels=np.array(labels),
        weights=weights,
        tract_lengths=weights * 10,
        centres=np.zeros((2, 3)),
        hemispheres=np.array([False, True]),
        undirected=True,
        number_of_regions=2,
        number_of_connections=2,
        saved_selection=[],
    )


def _tvb_loads_connectivity(path):
    """TVB's own load; ``("ok", labels, connectivity)`` or ``("error", type, None)``."""
    tvb_conn = pytest.importorskip("tvb.datatypes.connectivity")
    tvb_conn_h5 = pytest.importorskip("tvb.adapters.datatypes.h5.connectivity_h5")
    with tvb_quiet():
        f = tvb_h5.H5File.from_file(str(path))
        assert type(f) is tvb_conn_h5.ConnectivityH5
        loaded = tvb_conn.Connectivity()
        try:
            f.load_into(loaded)  # TVB fills the instance in place and returns None
        except Exception as error:  # compared between the two writers
            return ("error", type(error), None)
        finally:
            f.close()
    return ("ok", loaded.region_labels.tolist(), loaded)


def test_we_write_a_connectivity_tvb_reads(tmp_path):
    conn = _connectivity(Connectivity, ["left", "right"])
    path = tmp_path / "conn.h5"
    ConnectivityH5(path).store(conn)
    outcome, labels, loaded = _tvb_loads_connectivity(path)
    assert outcome == "ok", labels
    assert labels == ["left", "right"]
    np.testing.assert_array_equal(loaded.weights, conn.weights)
    np.testing.assert_array_equal(loaded.hemispheres, conn.hemispheres)
    assert loaded.undirected is True and loaded.gid == conn.gid


def test_non_ascii_labels_are_stored_as_tvb_stores_them(tmp_path):
    """TVB 2.10 writes labels as vlen UTF-8 but loads them with ``.astype("U128")``,
    which decodes h5py's ``bytes`` as ASCII: TVB cannot load non-ASCII labels, not even
    from its own files. We write exactly what TVB writes, so TVB behaves the same on
    both files, and our reader decodes both as UTF-8."""
    tvb_conn = pytest.importorskip("tvb.datatypes.connectivity")
    tvb_conn_h5 = pytest.importorskip("tvb.adapters.datatypes.h5.connectivity_h5")
    labels = ["left", "rïght"]
    theirs, ours = tmp_path / "theirs.h5", tmp_path / "ours.h5"
    with tvb_quiet():
        f = tvb_conn_h5.ConnectivityH5(str(theirs))
        f.store(_connectivity(tvb_conn.Connectivity, labels))
        f.close()
    ConnectivityH5(ours).store(_connectivity(Connectivity, labels))

    def on_disk(path):
        with h5py.File(path, "r") as h:
            ds = h["region_labels"]
            htype = ds.id.get_type()
            return (
                htype.get_class(),
                htype.is_variable_str(),
                htype.get_cset(),
                ds.shape,
                ds[()].tolist(),
                {k: ds.attrs[k] for k in sorted(ds.attrs)},
            )

    assert on_disk(ours) == on_disk(theirs)
    assert on_disk(ours)[:5] == (
        h5py.h5t.STRING,
        True,
        h5py.h5t.CSET_UTF8,
        (2,),
        [label.encode() for label in labels],
    )
    assert _tvb_loads_connectivity(ours)[:2] == _tvb_loads_connectivity(theirs)[:2]
    for path in (theirs, ours):
        loaded = H5File.from_file(path).load_into(Connectivity())
        assert loaded.region_labels.tolist() == labels
