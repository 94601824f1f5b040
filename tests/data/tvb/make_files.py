"""Write the TVB fixture files next to this script, with raw h5py.

Each file mirrors, attribute by attribute, a layout TVB 2.10 (data version 5) was observed
to write (``/work/shared/reference/tvb-h5.md`` section 3.7): ``TVB_``-prefixed root
attributes, variable-length UTF-8 strings, ``"bool:True"``/``"bool:False"`` booleans,
``urn:uuid:`` gids, int64 ``TVB_Data_version = 5``, five statistics attributes on every
dataset, TVB's sparse layout, ``libver="latest"`` (superblock v3). Nothing here uses
bsb_store, so the files are an independent statement of TVB's format.

Run ``python tests/data/tvb/make_files.py`` to regenerate. Files:

* ``tiny.h5``: 3.7 (a), ``rtmod.TinyH5`` with a (2, 2) dataset and an int scalar.
* ``rich.h5``: 3.7 (b), ``rtmod.RichSubH5``: every accessor kind, generic attributes,
  an appended dataset with TVB's unweighted mean, a CSC sparse matrix.
* ``Connectivity_<gid>.h5``: 3.7 (c), written by TVB's ``ConnectivityH5``. Its label
  ``rÉ2`` is stored as TVB stores it; TVB 2.10 itself cannot load it back (it decodes
  labels as ASCII), our reader can.
* ``TimeSeriesRegion_<gid>.h5``: 3.7 (c), streamed with three appends.
* ``Linear_<gid>.h5``: 3.7 (c), a view model written through ``ViewModelH5``.
* ``truncated.h5``: the first 1000 bytes of ``tiny.h5``.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import h5py
import numpy as np

HERE = Path(__file__).parent
STR = h5py.string_dtype("utf-8")

TINY_GID = uuid.UUID("fdde21ac-9885-46a5-a46b-c8b52c68239f")
RICH_GID = uuid.UUID("1f0c5a52-8a8b-4d7e-9a35-6c3f0d1e2b11")
CHILD_GID = uuid.UUID("2a1b3c4d-5e6f-4a0b-8c9d-0e1f2a3b4c5d")
OTHER_GID = uuid.UUID("3b2c4d5e-6f70-4b1c-9d0e-1f2a3b4c5d6e")
BURST_GID = uuid.UUID("4c3d5e6f-7081-4c2d-8e1f-2a3b4c5d6e7f")
CONN_GID = uuid.UUID("e408fd5a-82e6-4f5b-bd55-11b437a6aa58")
TS_GID = uuid.UUID("5d4e6f70-8192-4d3e-9f20-3b4c5d6e7f80")
LINEAR_GID = uuid.UUID("6e5f7081-92a3-4e4f-a031-4c5d6e7f8091")
CREATE_DATE = "2026-11-21,12-35-02.845343"


def tvb_bool(value: bool) -> str:
    return f"bool:{value}"


def stats(ds: h5py.Dataset, data: np.ndarray, *, mean: float | None = None) -> None:
    """TVB's DataSetMetaData.from_array, written as TVB's set_metadata does."""
    try:
        lo, hi, avg = data.min(), data.max(), data.mean()
        if data.dtype.kind in "OSU":
            raise TypeError("no numeric statistics for text")
    except (TypeError, ValueError):
        lo = hi = avg = ""
        finite, cplx = True, False
    else:
        finite = bool(np.isfinite(data).all())
        cplx = bool(np.iscomplex(data).any())
    ds.attrs["TVB_Minimum"] = lo
    ds.attrs["TVB_Maximum"] = hi
    ds.attrs["TVB_Mean"] = avg if mean is None else np.float64(mean)
    ds.attrs["TVB_IsFinite"] = tvb_bool(finite)
    ds.attrs["TVB_HasComplex"] = tvb_bool(cplx)


def stored(f: h5py.File, name: str, data: np.ndarray) -> h5py.Dataset:
    """DataSet.store: contiguous dataset plus statistics."""
    ds = f.create_dataset(name, data=data)
    stats(ds, data)
    return ds


def appended(
    f: h5py.File,
    name: str,
    blocks: list[np.ndarray],
    axis: int,
    chunks: tuple,
    mean: float,
) -> None:
    """DataSet.append x len(blocks); statistics written at close with TVB's mean."""
    first = blocks[0]
    maxshape = list(first.shape)
    maxshape[axis] = None
    ds = f.create_dataset(name, data=first, maxshape=tuple(maxshape), chunks=chunks)
    for block in blocks[1:]:
        start = ds.shape[axis]
        ds.resize(start + block.shape[axis], axis=axis)
        index = [slice(None)] * block.ndim
        index[axis] = slice(start, None)
        ds[tuple(index)] = block
    stats(ds, np.concatenate(blocks, axis=axis), mean=mean)


def header(f: h5py.File, written_by: str, gid: uuid.UUID) -> None:
    f.attrs["TVB_Data_version"] = np.int64(5)
    f.attrs["TVB_written_by"] = written_by
    f.attrs["TVB_gid"] = gid.urn


def generic(f: h5py.File, subject: str = "", user_tag_1: str = "", burst=None) -> None:
    """store_generic_attributes(GenericAttributes(...), create=True)."""
    f.attrs["TVB_create_date"] = CREATE_DATE
    f.attrs["TVB_invalid"] = tvb_bool(False)
    f.attrs["TVB_is_nan"] = tvb_bool(False)
    f.attrs["TVB_subject"] = subject
    f.attrs["TVB_state"] = ""
    f.attrs["TVB_user_tag_1"] = user_tag_1
    for i in range(2, 6):
        f.attrs[f"TVB_user_tag_{i}"] = ""
    f.attrs["TVB_operation_tag"] = ""
    f.attrs["TVB_visible"] = tvb_bool(True)
    if burst is not None:
        f.attrs["TVB_parent_burst"] = burst.urn


def make_tiny(path: Path) -> None:
    with h5py.File(path, "w", libver="latest") as f:
        header(f, "rtmod.TinyH5", TINY_GID)
        f.attrs["TVB_count"] = np.int64(7)
        stored(f, "data", np.array([[1.0, 2.0], [3.0, 4.5]]))


def make_rich(path: Path) -> None:
    with h5py.File(path, "w", libver="latest") as f:
        header(f, "rtmod.RichSubH5", RICH_GID)
        f.attrs["TVB_count"] = np.int64(3)
        f.attrs["TVB_ratio"] = np.float64(0.25)
        f.attrs["TVB_independent_int"] = np.int64(11)
        f.attrs["TVB_name"] = "héllo"
        f.attrs["TVB_flag"] = tvb_bool(False)
        f.attrs["TVB_child"] = CHILD_GID.urn
        f.attrs["TVB_other"] = OTHER_GID.urn
        f.attrs["TVB_meta"] = json.dumps({"k": [1, 2], "n": None})
        f.attrs["TVB_eq"] = json.dumps(
            {
                "type": "Gaussian",
                "parameters": {"amp": 1.0, "sigma": 1.0, "midpoint": 0.0, "offset": 0.0},
            }
        )
        generic(f, subject="subj", user_tag_1="tag", burst=BURST_GID)
        f.attrs["TVB_custom_key"] = "custom_value"
        f.attrs["TVB_type"] = "rtmod.Rich"
        stored(f, "data", np.arange(6, dtype=np.float64).reshape(2, 3))
        stored(
            f, "extra_ds", np.array([0.5, 1.5, 2.5], dtype=np.float32).astype(np.float64)
        )
        stored(f, "ints", np.array([4, -2, 9, 1], dtype=np.int64))
        stored(f, "labels", np.array([b"alpha", b"beta"], dtype="S32"))
        blocks = [np.full((2, 2), float(v)) for v in (0, 1, 2)]
        appended(f, "series", blocks, axis=0, chunks=(2, 2), mean=1.25)
        # A 3x3 CSC matrix with three stored entries (one an explicit zero).
        data = np.array([2.0, 0.0, 5.0])
        f.create_dataset("mtxdata", data=data)
        f.create_dataset("mtxindptr", data=np.array([0, 1, 2, 3], dtype=np.int32))
        f.create_dataset("mtxindices", data=np.array([0, 2, 1], dtype=np.int32))
        holder = f.create_dataset("mtx", data=np.zeros(1, dtype=np.float32))
        holder.attrs["TVB_Minimum"] = data.min()
        holder.attrs["TVB_Maximum"] = data.max()
        holder.attrs["TVB_Mean"] = data.mean()
        holder.attrs["TVB_format"] = "csc"
        holder.attrs["TVB_dtype"] = data.dtype.str
        holder.attrs["TVB_Shape"] = str((3, 3))


def make_connectivity(path: Path) -> None:
    with h5py.File(path, "w", libver="latest") as f:
        header(f, "tvb.adapters.datatypes.h5.connectivity_h5.ConnectivityH5", CONN_GID)
        generic(f)
        weights = np.array([[0.0, 1.0, 2.0], [1.0, 0.0, 3.0], [2.0, 3.0, 0.0]])
        f.attrs["TVB_undirected"] = tvb_bool(True)
        f.attrs["TVB_number_of_regions"] = np.int64(3)
        f.attrs["TVB_number_of_connections"] = np.int64(np.count_nonzero(weights))
        f.attrs["TVB_saved_selection"] = "[]"
        stored(
            f, "region_labels", np.array(["lA1", "rV1", "rÉ2"], dtype=object).astype(STR)
        )
        stored(f, "weights", weights)
        stored(f, "tract_lengths", weights * 10.0)
        stored(f, "centres", np.arange(9, dtype=np.float64).reshape(3, 3))
        stored(f, "hemispheres", np.array([False, True, True]))


def make_time_series(path: Path) -> None:
    with h5py.File(path, "w", libver="latest") as f:
        header(f, "tvb.adapters.datatypes.h5.time_series_h5.TimeSeriesRegionH5", TS_GID)
        generic(f)
        f.attrs["TVB_connectivity"] = CONN_GID.urn
        f.attrs["TVB_labels_ordering"] = json.dumps(
            ["Time", "State Variable", "Region", "Mode"]
        )
        f.attrs["TVB_labels_dimensions"] = "{}"
        f.attrs["TVB_sample_period"] = np.float64(0.5)
        f.attrs["TVB_sample_period_unit"] = "ms"
        f.attrs["TVB_start_time"] = np.float64(0.0)
        f.attrs["TVB_title"] = "region time series"
        f.attrs["TVB_nr_dimensions"] = np.int64(4)
        blocks = [
            np.full((2, 1, 3, 1), float(v)) + np.arange(3)[:, None] for v in (0, 1, 2)
        ]
        true_mean = float(np.concatenate(blocks).mean())
        tvb_mean = ((blocks[0].mean() + blocks[1].mean()) / 2 + blocks[2].mean()) / 2
        assert tvb_mean != true_mean
        appended(f, "data", blocks, axis=0, chunks=(2, 1, 3, 1), mean=tvb_mean)
        times = [np.array([0.0, 0.5]), np.array([1.0, 1.5]), np.array([2.0, 2.5])]
        appended(f, "time", times, axis=0, chunks=(2,), mean=1.5)


def make_linear(path: Path) -> None:
    with h5py.File(path, "w", libver="latest") as f:
        header(f, "tvb.core.neotraits._h5core.ViewModelH5", LINEAR_GID)
        generic(f)
        f.attrs["TVB_type"] = "tvb.simulator.coupling.Linear"
        stored(f, "a", np.array([0.00390625]))
        stored(f, "b", np.array([0.0]))


def main() -> None:
    make_tiny(HERE / "tiny.h5")
    make_rich(HERE / "rich.h5")
    make_connectivity(HERE / f"Connectivity_{CONN_GID.hex}.h5")
    make_time_series(HERE / f"TimeSeriesRegion_{TS_GID.hex}.h5")
    make_linear(HERE / f"Linear_{LINEAR_GID.hex}.h5")
    (HERE / "truncated.h5").write_bytes((HERE / "tiny.h5").read_bytes()[:1000])


if __name__ == "__main__":
    main()
