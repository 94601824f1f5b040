"""HDF5Engine lifecycle, metadata, hostile roots and locks."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pytest

from bsb_store.core import HDF5Engine, PlacementSet
from bsb_store.core.engine import _STATES
from bsb_store.exceptions import (
    ChunkSizeError,
    FormatVersionError,
    LockTimeoutError,
    NotAStoreError,
    ReadOnlyError,
    StoreExistsError,
    StoreNotFoundError,
)

pytestmark = pytest.mark.serial_only


def test_create_exists_remove(tmp_path):
    e = HDF5Engine(tmp_path / "a.h5")
    assert not e.exists()
    e.create()
    assert e.exists() and HDF5Engine.recognizes(e.root)
    with h5py.File(e.root, "r") as f:  # plain h5py can read it, and it says what it is
        assert f.attrs["bsb_store_format"] == "bsb-store"
        assert f.attrs["format_version"] == 1
    e.remove()
    assert not e.exists()
    assert not os.path.exists(e.root + ".lock")


def test_create_truncates_existing(tmp_path):
    e = HDF5Engine(tmp_path / "a.h5")
    e.create()
    PlacementSet.create(e, "a")
    e.create()
    assert not PlacementSet.exists(e, "a")


def test_metadata_and_state(tmp_path):
    e = HDF5Engine(tmp_path / "a.h5")
    e.create()
    meta = e.metadata
    assert meta["state_id"] == 0 and len(meta["storage_id"]) == 36
    assert meta["engine_name"] == "bsb-store"
    ps = PlacementSet.create(e, "a")
    assert e.state_id == 1
    ps.append_data((0, 0, 0), np.zeros((2, 3)))
    len(ps)  # merging the append is one more published transaction
    assert e.state_id == 2
    assert e.storage_id == meta["storage_id"]
    assert e.versions["engine"] == "bsb-store"


def test_move_and_copy(tmp_path):
    e = HDF5Engine(tmp_path / "a.h5")
    e.create()
    PlacementSet.create(e, "a").append_data((0, 0, 0), np.ones((3, 3)))
    other = HDF5Engine(e.root)
    e.move(tmp_path / "b.h5")
    assert e.root == str(tmp_path / "b.h5") and e.exists()
    assert not other.exists()
    assert len(PlacementSet(e, "a")) == 3  # the pending append moved with the store
    e.copy(tmp_path / "c.h5")
    c = HDF5Engine(tmp_path / "c.h5")
    assert np.array_equal(PlacementSet(c, "a").load_positions(), np.ones((3, 3)))
    with pytest.raises(StoreExistsError):
        e.copy(tmp_path / "c.h5")


def test_engines_on_one_root_share_state(tmp_path):
    a = HDF5Engine(tmp_path / "a.h5")
    a.create()
    b = HDF5Engine(str(tmp_path / "a.h5"))
    assert a == b and a._st is b._st and a.files == b.files
    assert a != HDF5Engine(tmp_path / "b.h5")


def test_directory_root_is_refused(tmp_path):
    with pytest.raises(NotAStoreError, match="directory"):
        HDF5Engine(tmp_path)


@pytest.mark.parametrize("kind", ["zero", "text", "foreign", "truncated"])
def test_hostile_roots_raise_and_stay_untouched(tmp_path, kind):
    path = tmp_path / "x.h5"
    if kind == "zero":
        path.write_bytes(b"")
    elif kind == "text":
        path.write_text("not hdf5 at all")
    elif kind == "foreign":
        with h5py.File(path, "w") as f:
            f["data"] = np.arange(10)
    else:
        good = HDF5Engine(tmp_path / "good.h5")
        good.create()
        PlacementSet.create(good, "a")
        good.close()
        data = (tmp_path / "good.h5").read_bytes()
        path.write_bytes(data[: len(data) // 2])
    before = path.read_bytes()
    e = HDF5Engine(path)
    assert not HDF5Engine.recognizes(path)
    with pytest.raises(NotAStoreError):
        PlacementSet.exists(e, "a")
    with pytest.raises(NotAStoreError):
        PlacementSet.create(e, "a")
    assert path.read_bytes() == before


def test_newer_format_version_is_refused(tmp_path):
    e = HDF5Engine(tmp_path / "a.h5")
    e.create()
    e.close()
    _STATES.clear()
    with h5py.File(e.root, "a") as f:
        f.attrs["format_version"] = 99
    before = Path(e.root).read_bytes()
    e = HDF5Engine(e.root)
    with pytest.raises(FormatVersionError, match="version 99"):
        PlacementSet.exists(e, "a")
    assert Path(e.root).read_bytes() == before


def test_missing_root(tmp_path):
    e = HDF5Engine(tmp_path / "none.h5")
    with pytest.raises(StoreNotFoundError):
        PlacementSet.exists(e, "a")
    assert not os.path.exists(e.root)


def _open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
def test_close_releases_the_writer_of_a_removed_root(tmp_path):
    # The shard writer holds its `.alive` flock and its lock file open; closing the
    # engine must release them even when the root was deleted behind its back.
    e = HDF5Engine(tmp_path / "a.h5")
    e.create()
    before = _open_fds()
    PlacementSet.create(e, "a").append_data((0, 0, 0), np.zeros((2, 3)))
    writer = e._st.writer
    alive, lock = writer._alive, writer.lock._fh
    assert not alive.closed and not lock.closed
    os.unlink(e.root)
    os.unlink(e.root + ".lock")
    e.close()
    assert writer.closed and alive.closed and lock.closed
    assert _open_fds() <= before
    assert not os.path.exists(writer.path)


def test_exit_closes_the_writer_of_a_removed_root(tmp_path):
    # The atexit handler closes what the user left open: no ResourceWarning at exit.
    script = textwrap.dedent(f"""
        import os
        import numpy as np
        from bsb_store.core import HDF5Engine, PlacementSet
        e = HDF5Engine({str(tmp_path / "a.h5")!r})
        e.create()
        PlacementSet.create(e, "a").append_data((0, 0, 0), np.zeros((2, 3)))
        os.unlink(e.root)
    """)
    run = subprocess.run(
        [sys.executable, "-X", "dev", "-c", script], capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr
    assert "ResourceWarning" not in run.stderr, run.stderr


def test_read_only_refuses_writes(engine):
    ps = PlacementSet.create(engine, "a")
    with engine.read_only():
        with pytest.raises(ReadOnlyError):
            ps.append_data((0, 0, 0), np.zeros((1, 3)))
        with pytest.raises(ReadOnlyError):
            PlacementSet.create(engine, "b")
        assert len(ps) == 0
    ps.append_data((0, 0, 0), np.zeros((1, 3)))
    assert len(ps) == 1


def test_chunk_size_is_one_per_store(engine):
    from bsb_store.core import Chunk

    ps = PlacementSet.create(engine, "a")
    ps.append_data((0, 0, 0), [])
    assert ps.get_all_chunks()[0].size is None
    ps.append_data(Chunk((0, 0, 1), 20), [])
    assert [c.size for c in ps.get_all_chunks()] == [(20.0,) * 3] * 2
    with pytest.raises(ChunkSizeError):
        ps.append_data(Chunk((0, 0, 2), 30), np.zeros((1, 3)))
    assert len(ps) == 0 and len(ps.get_all_chunks()) == 2
    engine.clear_placement()
    assert engine._chunk_size() is None


def test_get_chunk_stats_and_clear_placement(engine):
    a = PlacementSet.create(engine, "a")
    b = PlacementSet.create(engine, "b")
    a.append_data((0, 0, 0), np.zeros((3, 3)))
    b.append_data((0, 0, 0), np.zeros((2, 3)))
    b.append_data((1, 0, 0), np.zeros((4, 3)))
    stats = engine.get_chunk_stats()
    assert list(stats) == ["0", "1"]
    assert stats["0"]["placed"] == 5 and stats["1"]["placed"] == 4
    assert stats["0"]["connections"] == {"inc": 0, "out": 0}
    engine.clear_placement()
    assert engine.get_chunk_stats() == {}
    assert not PlacementSet.exists(engine, "a")


def test_lock_timeout_gives_a_clear_error(tmp_path):
    e = HDF5Engine(tmp_path / "a.h5", locking="flock")
    e.create()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
            import portalocker, sys, time
            fh = open({e.root + ".lock"!r}, 'r+b')
            portalocker.lock(fh, portalocker.LockFlags.EXCLUSIVE)
            print('locked', flush=True)
            time.sleep(30)
        """),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        e._st.lock.timeout = 0.3
        with pytest.raises(LockTimeoutError, match="another process holds it"):
            PlacementSet.create(e, "a")
    finally:
        holder.kill()
        holder.wait()
    e._st.lock.timeout = 60
    PlacementSet.create(e, "a")
    assert PlacementSet.exists(e, "a")


def test_locking_none_mode(tmp_path):
    e = HDF5Engine(tmp_path / "a.h5", locking="none")
    e.create()
    ps = PlacementSet.create(e, "a")
    ps.append_data((0, 0, 0), np.zeros((2, 3)))
    assert len(ps) == 2


def test_create_needs_the_parent_directory(tmp_path):
    """As h5py and bsb-hdf5: a missing directory is an error (a typo in a path must
    not grow a directory tree); nothing is made, not even the lock file."""
    e = HDF5Engine(tmp_path / "deep" / "er" / "s.h5")
    with pytest.raises(StoreNotFoundError, match="does not exist") as info:
        e.create()
    assert isinstance(info.value, FileNotFoundError)
    assert not (tmp_path / "deep").exists()


# What create() may replace (issue 17): our own roots, never someone else's file.
def _foreign_hdf5(path):
    with h5py.File(path, "w") as f:  # e.g. a bsb-hdf5 network
        f.create_dataset("placement/granule_cell/position", data=np.ones((4, 3)))
        f.attrs["version"] = "4.0"


def test_create_refuses_a_text_file_unless_forced(tmp_path):
    p = tmp_path / "notes.txt"
    p.write_text("precious\n")
    e = HDF5Engine(p)
    assert e.exists() and not e.is_store()
    with pytest.raises(NotAStoreError, match=r"not HDF5.*untouched.*force=True"):
        e.create()
    assert p.read_text() == "precious\n"
    assert not Path(str(p) + ".lock").exists()  # nothing left next to it
    with pytest.raises(StoreExistsError):
        e.create(mode="x")
    e.create(force=True)
    assert e.is_store() and PlacementSet.list(e) == []


def test_create_refuses_a_foreign_hdf5_file_unless_forced(tmp_path):
    p = tmp_path / "network.h5"
    _foreign_hdf5(p)
    before = p.read_bytes()
    e = HDF5Engine(p)
    assert e.exists() and not e.is_store() and not HDF5Engine.recognizes(p)
    with pytest.raises(NotAStoreError, match="another kind"):
        e.create()
    assert p.read_bytes() == before
    e.create(mode="w", force=True)
    assert e.is_store()


def test_create_replaces_our_own_root_and_mode_x_refuses_it(tmp_path):
    e = HDF5Engine(tmp_path / "s.h5")
    assert not e.exists() and not e.is_store()
    e.create(mode="x")  # nothing there: created
    PlacementSet.create(e, "a").append_data((0, 0, 0), np.zeros((2, 3)))
    with pytest.raises(StoreExistsError, match="mode='x'"):
        e.create(mode="x")
    with pytest.raises(StoreExistsError):
        e.create(mode="w-")
    assert len(PlacementSet(e, "a")) == 2
    e.create()  # mode "w": a bsb-store root is replaced, as BSB's create/renew expect
    assert e.is_store() and PlacementSet.list(e) == []


def test_create_takes_an_empty_file_and_refuses_a_directory(tmp_path):
    empty = tmp_path / "empty.h5"
    empty.touch()  # e.g. tempfile.NamedTemporaryFile(suffix=".h5"): nothing to lose
    HDF5Engine(empty).create()
    assert HDF5Engine.recognizes(empty)
    d = tmp_path / "dir.h5"
    d.mkdir()
    with pytest.raises(NotAStoreError, match="directory"):
        HDF5Engine(d).create(force=True)
    with pytest.raises(ValueError, match="mode"):
        HDF5Engine(tmp_path / "x.h5").create(mode="a")


def test_interrupted_transaction_is_finished_by_the_next_reader(tmp_path):
    from bsb_store.core.writes import txn as txnmod
    from bsb_store.exceptions import RecoveryNeededError

    e = HDF5Engine(tmp_path / "a.h5")
    e.create()
    PlacementSet.create(e, "a").append_data((0, 0, 0), np.zeros((2, 3)))
    assert len(PlacementSet(e, "a")) == 2
    e.close()

    def crash_mid_transaction():
        # A writer died after journaling "drop every chunk of set a", before applying.
        with h5py.File(e.root, "a") as f:
            txn = txnmod.Transaction(f)
            txn.resize("placement/a/index/key", 0)
            txn.resize("placement/a/index/count", 0)
            txnmod.write_journal(f, txn._ops, txn._payloads)
        _STATES.clear()

    crash_mid_transaction()
    ro = HDF5Engine(e.root)
    with ro.read_only():  # entering read-only on a writable engine finishes it
        assert len(PlacementSet(ro, "a")) == 0
        ro._st.close_handle()
        crash_mid_transaction()
        with pytest.raises(RecoveryNeededError, match="interrupted"):
            len(PlacementSet(ro, "a"))  # a read-only engine cannot
    assert len(PlacementSet(HDF5Engine(e.root), "a")) == 0  # redone, then read
