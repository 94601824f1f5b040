"""The undo log under the root's write sessions: rollback is exact and idempotent."""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np
import pytest

from bsb_store.core import HDF5Engine, PlacementSet
from bsb_store.core.writes import undo
from bsb_store.core.writes.undo import (
    PAGE,
    RollbackView,
    UndoFile,
    has_undo,
    open_view,
    rollback,
    undo_path,
)
from bsb_store.exceptions import StoreError


@pytest.fixture
def h5(tmp_path):
    path = tmp_path / "root.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("a", data=np.arange(5000), maxshape=(None,), chunks=(500,))
        f.attrs["note"] = "before"
    return str(path)


def modify(path: str) -> UndoFile:
    """A session that overwrites data and metadata, grows the file, and is not
    committed (its process died)."""
    session = UndoFile(path)
    with h5py.File(session, "r+") as f:
        f["a"][:100] = -1
        f["a"].resize(20000, axis=0)
        f["a"][5000:] = 7
        f.attrs["note"] = "after"
        f.create_group("new")
    session.close()
    return session


def test_rollback_restores_every_byte_and_the_size(h5):
    before = Path(h5).read_bytes()
    modify(h5)
    assert Path(h5).read_bytes() != before and has_undo(h5)
    assert rollback(h5)
    assert Path(h5).read_bytes() == before
    assert not has_undo(h5) and not rollback(h5)


def test_commit_keeps_the_session(h5):
    session = UndoFile(h5)
    with h5py.File(session, "r+") as f:
        f["a"][:3] = 9
    session.commit()
    assert not has_undo(h5)
    with h5py.File(h5, "r") as f:
        assert f["a"][:4].tolist() == [9, 9, 9, 3]


def test_abort_undoes_the_session(h5):
    before = Path(h5).read_bytes()
    session = UndoFile(h5)
    with h5py.File(session, "r+") as f:
        f["a"][:3] = 9
    session.abort()
    assert Path(h5).read_bytes() == before and not has_undo(h5)


def test_each_page_is_saved_once_and_only_below_the_old_size(h5):
    session = UndoFile(h5)
    base = session.base
    session.seek(10)
    session.write(b"x" * 10)
    session.seek(20)
    session.write(b"y" * 10)  # same page: not saved again
    session.seek(base)
    session.write(b"z" * 3 * PAGE)  # past the old end: nothing to save
    assert session.saved_bytes == min(PAGE, base)
    session.close()
    rollback(h5)
    assert os.path.getsize(h5) == base


def test_truncation_below_the_old_size_is_undone(h5):
    before = Path(h5).read_bytes()
    session = UndoFile(h5)
    session.truncate(100)
    session.close()
    assert os.path.getsize(h5) == 100
    rollback(h5)
    assert Path(h5).read_bytes() == before


def test_a_torn_last_record_is_ignored(h5, monkeypatch):
    """A kill while a record is appended: that record's page was never overwritten."""
    before = Path(h5).read_bytes()
    session = UndoFile(h5)
    session.seek(0)
    session.write(b"\0" * 16)  # one complete record, then the overwrite
    log = undo_path(h5)
    size = os.path.getsize(log)
    session.close()
    with open(log, "ab") as f:  # half a record for a page that is still intact
        f.write(b"\x01" * 30)
    assert os.path.getsize(log) > size
    rollback(h5)
    assert Path(h5).read_bytes() == before


def test_a_log_torn_in_its_header_changes_nothing(h5):
    before = Path(h5).read_bytes()
    with open(undo_path(h5), "wb") as f:
        f.write(undo.MAGIC[:5])
    assert rollback(h5)
    assert Path(h5).read_bytes() == before and not has_undo(h5)


def test_rollback_killed_halfway_is_run_again(h5, monkeypatch):
    before = Path(h5).read_bytes()
    modify(h5)
    calls = {"n": 0}
    real = undo._pwrite

    def dies_after_one(fd, data, offset):
        if calls["n"] == 1:
            raise KeyboardInterrupt  # stands for the process dying mid-rollback
        calls["n"] += 1
        real(fd, data, offset)

    monkeypatch.setattr(undo, "_pwrite", dies_after_one)
    with pytest.raises(KeyboardInterrupt):
        rollback(h5)
    monkeypatch.setattr(undo, "_pwrite", real)
    assert has_undo(h5)
    rollback(h5)
    assert Path(h5).read_bytes() == before


def test_view_shows_the_rolled_back_root_without_changing_it(h5):
    modify(h5)
    torn = Path(h5).read_bytes()
    f, view = open_view(h5)
    with f:
        assert f.attrs["note"] == "before"
        assert f["a"].shape == (5000,) and f["a"][:3].tolist() == [0, 1, 2]
        assert "new" not in f
    view.close()
    assert Path(h5).read_bytes() == torn and has_undo(h5)


def test_view_without_log_is_the_file(h5):
    view = RollbackView(h5)
    data = bytearray(os.path.getsize(h5))
    assert view.readinto(data) == len(data)
    assert bytes(data) == Path(h5).read_bytes()
    view.close()


# ------------------------------------------------------------------- the engine
def test_engine_rolls_back_a_dead_writers_session(tmp_path):
    root = tmp_path / "s.h5"
    e = HDF5Engine(root)
    e.create()
    ps = PlacementSet.create(e, "c")
    ps.append_data((0, 0, 0), np.ones((4, 3)))
    assert len(ps) == 4
    e.close()
    before = root.read_bytes()
    modify_store = UndoFile(str(root))
    with h5py.File(modify_store, "r+") as f:
        del f["placement/c"]
    modify_store.close()
    reader = HDF5Engine(root)
    with reader.read_only():
        assert len(PlacementSet(reader, "c")) == 4
    assert root.read_bytes() == before and not has_undo(str(root))


def test_a_failed_write_leaves_the_root_byte_identical(tmp_path):
    root = tmp_path / "s.h5"
    e = HDF5Engine(root)
    e.create()
    PlacementSet.create(e, "c")
    e.close()
    before = root.read_bytes()
    with pytest.raises(StoreError), e._write() as txn:
        txn.file.create_group("placement/half-done")
        txn.file.attrs["scribble"] = 1
        raise StoreError("refused half way")
    assert root.read_bytes() == before and not has_undo(str(root))
    e.close()
