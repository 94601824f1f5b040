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
        loaded = f.load_into(TvbTiny())
        meta = f.data.get_cached_metadata()
        f.close()
    np.testing.assert_array_equal(loaded.data, ours.data)
    assert loaded.count == 7 and loaded.gid == ours.gid
    assert (meta.min, meta.max, meta.mean) == (1.0, 4.5, 2.625)


def test_we_write_a_connectivity_tvb_reads(tmp_path):
    tvb_conn = pytest.importorskip("tvb.datatypes.connectivity")
    tvb_conn_h5 = pytest.importorskip("tvb.adapters.datatypes.h5.connectivity_h5")
    weights = np.array([[0.0, 1.0], [1.0, 0.0]])
    conn = Connectivity(
        region_labels=np.array(["left", "rïght"]),
        weights=weights,
        tract_lengths=weights * 10,
        centres=np.zeros((2, 3)),
        hemispheres=np.array([False, True]),
        undirected=True,
        number_of_regions=2,
        number_of_connections=2,
        saved_selection=[],
    )
    path = tmp_path / "conn.h5"
    ConnectivityH5(path).store(conn)
    with tvb_quiet():
        f = tvb_h5.H5File.from_file(str(path))
        assert type(f) is tvb_conn_h5.ConnectivityH5
        loaded = f.load_into(tvb_conn.Connectivity())
        f.close()
    assert loaded.region_labels.tolist() == ["left", "rïght"]
    np.testing.assert_array_equal(loaded.weights, weights)
    assert loaded.undirected is True and loaded.gid == conn.gid
