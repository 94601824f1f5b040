"""H5File: open modes, context lifetime, failure paths, versions, group binding."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from bsb_store.exceptions import (
    FormatVersionError,
    InvalidInputError,
    NotAStoreError,
    ReadOnlyError,
    StoreExistsError,
    StoreNotFoundError,
)
from bsb_store.h5 import Attr, H5File, Scalar

from .conftest import attrs_of
from .formats import TinyH5, Volume, VolumeH5, make_volume


@pytest.fixture
def opens(monkeypatch):
    """Record every h5py.File opened by the format layer (path, mode)."""
    calls = []
    real = h5py.File

    class Counting(real):
        def __init__(self, name, mode="r", *args, **kwargs):
            calls.append((str(name), mode))
            kwargs_seen.append(kwargs)
            super().__init__(name, mode, *args, **kwargs)

    kwargs_seen: list[dict] = []
    monkeypatch.setattr(h5py, "File", Counting)
    calls_kwargs.clear()
    calls_kwargs.append(kwargs_seen)
    return calls


calls_kwargs: list[list[dict]] = []


# ------------------------------------------------------------------------- modes
def test_constructing_never_creates_or_opens(h5path, opens):
    for mode in ("r", "r+", "a"):
        VolumeH5(h5path, mode=mode)
    assert not h5path.exists()
    assert opens == []


@pytest.mark.parametrize("mode", ["r", "r+", "a"])
def test_reading_a_missing_file_never_creates_it(h5path, mode):
    f = VolumeH5(h5path, mode=mode)
    with pytest.raises(StoreNotFoundError, match="No such file"):
        f.origin.load()
    with pytest.raises(StoreNotFoundError):
        f.load_into(Volume())
    assert not f.origin.exists()
    assert not h5path.exists()


def test_mode_r_on_missing_file_in_context(h5path):
    with (
        pytest.raises(StoreNotFoundError, match="nothing was created"),
        VolumeH5(h5path, mode="r"),
    ):
        pass
    assert not h5path.exists()


def test_mode_a_creates_on_first_write_with_headers(h5path):
    f = VolumeH5(h5path)
    assert f.mode == "a"
    f.voxel_unit.store("mm")
    attrs = attrs_of(h5path)
    assert attrs["written_by"] == VolumeH5.registered_name
    assert attrs["format_version"] == 1 and attrs["format_version"].dtype == np.int64
    assert attrs["voxel_unit"] == "mm"


def test_mode_w_truncates_at_construction(h5path):
    VolumeH5(h5path).store(make_volume())
    f = VolumeH5(h5path, mode="w")
    assert set(attrs_of(h5path)) == {"written_by", "format_version"}
    with h5py.File(h5path, "r") as raw:
        assert list(raw) == []
    f.voxel_unit.store("cm")  # later writes do not truncate again
    f.independent_int.store(1)
    assert attrs_of(h5path)["voxel_unit"] == "cm"


@pytest.mark.parametrize("mode", ["w-", "x"])
def test_exclusive_create(h5path, mode, unchanged):
    VolumeH5(h5path, mode=mode)
    assert attrs_of(h5path)["written_by"] == VolumeH5.registered_name
    check = unchanged(h5path)
    with pytest.raises(StoreExistsError, match="exists"):
        VolumeH5(h5path, mode=mode)
    check()


def test_create_in_missing_directory(tmp_path):
    with pytest.raises(StoreNotFoundError, match="no directory"):
        VolumeH5(tmp_path / "nope" / "f.h5", mode="w")
    with pytest.raises(StoreNotFoundError, match="does not exist"):
        VolumeH5(tmp_path / "nope" / "f.h5").voxel_unit.store("mm")


def test_invalid_mode(h5path):
    with pytest.raises(InvalidInputError, match="Invalid mode 'rw'"):
        VolumeH5(h5path, mode="rw")
    with pytest.raises(InvalidInputError, match=r"expects a path or an h5py\.Group"):
        VolumeH5(42)


# ------------------------------------------------------------- foreign files
def _write_not_hdf5(path):
    path.write_text("certainly not HDF5\n")


def _write_empty(path):
    path.write_bytes(b"")


def _write_truncated(path):
    VolumeH5(path).store(make_volume())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize("make", [_write_not_hdf5, _write_empty, _write_truncated])
@pytest.mark.parametrize("mode", ["r", "r+", "a"])
def test_foreign_files_raise_and_stay_untouched(h5path, make, mode, unchanged):
    make(h5path)
    check = unchanged(h5path)
    f = VolumeH5(h5path, mode=mode)
    with pytest.raises(NotAStoreError, match=r"f\.h5"):
        f.origin.load()
    with pytest.raises(NotAStoreError), f:
        pass
    if mode != "r":
        with pytest.raises(NotAStoreError):
            f.store(make_volume())
    with pytest.raises(NotAStoreError):
        H5File.from_file(h5path)
    check()


def test_directory_is_not_a_store(tmp_path):
    with pytest.raises(NotAStoreError, match="a directory"):
        VolumeH5(tmp_path).origin.load()


def test_not_hdf5_message_names_file_and_expectation(h5path):
    _write_empty(h5path)
    with pytest.raises(NotAStoreError) as err:
        VolumeH5(h5path, mode="r").origin.load()
    assert str(h5path) in str(err.value)
    assert "0 bytes" in str(err.value) and "VolumeH5" in str(err.value)


# ----------------------------------------------------------------- read-only
WRITES = {
    "store": lambda f: f.store(make_volume()),
    "scalar": lambda f: f.voxel_unit.store("km"),
    "dataset": lambda f: f.origin.store(np.zeros(3)),
    "append": lambda f: f.series.append(np.zeros((1, 2))),
    "remove": lambda f: f.voxel_unit.remove(),
    "metadata": lambda f: f.store_metadata_param("k", "v"),
    "generic": lambda f: f.store_generic_attributes(),
    "recompute": lambda f: f.series.recompute_statistics(),
}


@pytest.mark.parametrize("write", list(WRITES))
def test_writes_through_mode_r_raise_and_change_nothing(h5path, write, unchanged):
    f = VolumeH5(h5path)
    f.store(make_volume(series=np.ones((2, 2))))
    check = unchanged(h5path)
    ro = VolumeH5(h5path, mode="r")
    with pytest.raises(ReadOnlyError, match="read-only"):
        WRITES[write](ro)
    with ro, pytest.raises(ReadOnlyError):
        WRITES[write](ro)
    check()


def test_read_only_open_reads(h5path, unchanged):
    VolumeH5(h5path).store(make_volume())
    check = unchanged(h5path)
    with VolumeH5(h5path, mode="r") as f:
        assert f.voxel_unit.load() == "µm"
        assert f.load_into(Volume()).origin.tolist() == [1.0, 2.0, 3.0]
    check()


# ------------------------------------------------------------ context lifetime
def test_context_opens_the_file_once(h5path, opens):
    VolumeH5(h5path).store(make_volume())
    opens.clear()
    with VolumeH5(h5path, mode="r+") as f:
        f.voxel_unit.store("cm")
        f.series.append(np.ones((3, 2)))
        f.series.append(np.ones((3, 2)))
        assert f.series[0, :].tolist() == [1.0, 1.0]
        f.load_into(Volume())
        assert f.is_open
    assert opens == [(str(h5path), "r+")]
    assert not f.is_open


def test_outside_a_context_each_operation_opens_and_closes(h5path, opens):
    f = VolumeH5(h5path)
    f.store(make_volume())
    f.voxel_unit.load()
    assert len(opens) == 2
    assert opens[1][1] == "r"  # reads open read-only
    assert not f.is_open
    # The file is closed: another writer may open it exclusively.
    with h5py.File(h5path, "r+"):
        pass


def test_context_closes_on_exception_and_object_is_reusable(h5path):
    f = VolumeH5(h5path)
    with pytest.raises(RuntimeError), f:
        f.voxel_unit.store("mm")
        raise RuntimeError("boom")
    assert not f.is_open
    assert f.voxel_unit.load() == "mm"
    with f:
        assert f.voxel_unit.load() == "mm"


def test_nested_contexts_and_explicit_open(h5path, opens):
    f = VolumeH5(h5path)
    with f:
        with f:
            f.voxel_unit.store("a")
        assert f.is_open
    assert not f.is_open
    f.open()
    with f:
        pass
    assert f.is_open  # a context does not close a handle it did not open
    f.close()
    f.close()  # idempotent
    assert not f.is_open
    assert sum(1 for _, mode in opens if mode == "a") == 2


def test_open_in_mode_a_creates_with_headers(h5path):
    with VolumeH5(h5path) as f:
        assert f.is_open
    assert attrs_of(h5path)["written_by"] == VolumeH5.registered_name


def test_reopening_keeps_written_by(h5path):
    VolumeH5(h5path).store(make_volume())
    other = H5File(h5path)
    other.store_metadata_param("note", "x")
    assert attrs_of(h5path)["written_by"] == VolumeH5.registered_name


def test_open_without_writes_leaves_bytes_identical(h5path, unchanged):
    VolumeH5(h5path).store(make_volume())
    check = unchanged(h5path)
    with VolumeH5(h5path, mode="a") as f:
        f.load_into(Volume())
    check()


def test_locking_and_libver_are_passed_to_h5py(h5path, opens):
    f = VolumeH5(h5path, libver="latest", locking=False)
    f.voxel_unit.store("mm")
    assert calls_kwargs[0] == [{"locking": False, "libver": "latest"}]
    with h5py.File(h5path, "r") as raw:
        assert raw.id.get_create_plist().get_version()[0] == 3  # superblock v3
    VolumeH5(h5path.with_name("g.h5")).voxel_unit.store("mm")
    with h5py.File(h5path.with_name("g.h5"), "r") as raw:
        assert raw.id.get_create_plist().get_version()[0] == 0  # h5py's default


# ------------------------------------------------------------ format version
def test_newer_native_format_version(h5path, unchanged):
    VolumeH5(h5path).store(make_volume())
    with h5py.File(h5path, "r+") as raw:
        raw.attrs["format_version"] = np.int64(99)
    check = unchanged(h5path)
    for mode in ("r", "r+", "a"):
        f = VolumeH5(h5path, mode=mode)
        with pytest.raises(FormatVersionError, match="format_version = 99") as err:
            f.voxel_unit.load()
        assert "reads" in str(err.value) and "not modified" in str(err.value)
        with pytest.raises(FormatVersionError), f:
            pass
        assert not f.is_open
    with pytest.raises(FormatVersionError):
        VolumeH5(h5path).store(make_volume())
    with pytest.raises(FormatVersionError):
        H5File.from_file(h5path).load_into(Volume())
    check()


def test_per_class_format_version(h5path):
    class V2(VolumeH5, register=False):
        format_version = 2

    V2(h5path).store(make_volume())
    assert attrs_of(h5path)["format_version"] == 2
    assert V2(h5path, mode="r").voxel_unit.load() == "µm"
    with pytest.raises(FormatVersionError, match="version 1"):
        VolumeH5(h5path, mode="r").voxel_unit.load()


def test_newer_tvb_data_version(tmp_path, tvb_file, unchanged):
    path = tvb_file("tiny.h5")
    with h5py.File(path, "r+") as raw:
        raw.attrs["TVB_Data_version"] = np.int64(6)
    check = unchanged(path)
    with pytest.raises(FormatVersionError, match="TVB_Data_version = 6"):
        TinyH5(path, mode="r").data.load()
    with pytest.raises(FormatVersionError):
        TinyH5(path).count.store(1)
    check()


# ------------------------------------------------------------- group binding
def test_format_bound_to_a_group(h5path):
    with h5py.File(h5path, "w") as raw:
        group = raw.require_group("chunks/0")
        f = VolumeH5(group)
        assert f.is_bound_to_group and f.group_name == "/chunks/0" and f.mode == "r+"
        f.store(make_volume())
        f.series.append(np.ones((2, 2)))
        with f:  # no-op open/close: the caller owns the handle
            f.voxel_unit.store("cm")
        f.close()
        assert raw.id.valid
        g2 = VolumeH5.from_group(raw.require_group("chunks/1"))
        g2.origin.store(np.array([9.0, 9.0, 9.0]))
        assert dict(raw.attrs) == {}
        assert "origin" not in raw
        assert raw["chunks/0"].attrs["written_by"] == VolumeH5.registered_name
        assert raw["chunks/0/origin"][()].tolist() == [1.0, 2.0, 3.0]
        assert raw["chunks/1/origin"][()].tolist() == [9.0, 9.0, 9.0]
        assert "chunks/0" in repr(f) and "group '/chunks/0'" in f.describe()
    with h5py.File(h5path, "r") as raw:
        f = VolumeH5.from_group(raw["chunks/0"])
        assert f.mode == "r"
        v = f.load_into(Volume())
        assert v.voxel_unit == "cm" and v.series.shape == (2, 2)
        with pytest.raises(ReadOnlyError):
            f.voxel_unit.store("x")
        assert H5File.from_group(raw["chunks/1"]).profile.name == "native"


def test_group_binding_profiles_and_closed_groups(h5path):
    with h5py.File(h5path, "w") as raw:
        group = raw.create_group("tvb")
        f = TinyH5.from_group(group)
        f.count.store(3)
        assert group.attrs["TVB_count"] == 3
        assert group.attrs["TVB_Data_version"] == 5
        plain = H5File.from_group(group)  # detects the TVB headers
        assert plain.profile.name == "tvb"
    with pytest.raises(InvalidInputError, match="closed group"):
        VolumeH5(group)
    with pytest.raises(StoreNotFoundError, match="closed by its owner"):
        f.count.load()


def test_group_in_read_only_file_with_newer_version(h5path):
    with h5py.File(h5path, "w") as raw:
        raw.create_group("g").attrs["format_version"] = np.int64(7)
    with h5py.File(h5path, "r") as raw, pytest.raises(FormatVersionError):
        VolumeH5(raw["g"])


def test_self_describing_false_writes_no_headers(h5path):
    class Lean(H5File, register=False):
        self_describing = False

        def __init__(self, path, **kwargs):
            super().__init__(path, **kwargs)
            self.n = Scalar(Attr(int), self, name="n")

    with h5py.File(h5path, "w") as raw:
        Lean(raw.create_group("c")).n.store(1)
        assert dict(raw["c"].attrs) == {"n": 1}


def test_repr_and_names(h5path):
    f = VolumeH5(h5path, mode="r")
    assert repr(f) == f"<VolumeH5({str(h5path)!r}, mode='r')>"
    assert VolumeH5.file_name_base() == "Volume"
    assert TinyH5.file_name_base() == "Tiny"


def test_remove_and_recompute_never_create_files(h5path):
    f = VolumeH5(h5path)
    f.voxel_unit.remove()
    assert not h5path.exists()
    with pytest.raises(StoreNotFoundError):
        f.series.recompute_statistics()
    assert not h5path.exists()
    with pytest.raises(ReadOnlyError):
        VolumeH5(h5path, mode="r").voxel_unit.remove()
