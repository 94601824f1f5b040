"""Shard files: commit records, deferred commits, reading committed calls only."""

import os

import h5py
import numpy as np
import pytest

import bsb_store.core.writes.shard as shard_mod
from bsb_store.core.writes.shard import (
    Record,
    ShardWriter,
    list_shards,
    read_calls,
    read_commit_hint,
    shard_paths,
    writer_alive,
)

pytestmark = pytest.mark.serial_only


def rec(n, key=0, col="position"):
    return Record(("P", "cells", col), key, 0, np.full((n, 3), float(n)), n)


def test_commits_are_visible_to_other_readers(tmp_path):
    w = ShardWriter(str(tmp_path))
    w.append([rec(2), Record(("P", "cells", "count"), 0, 0, None, 2)])
    w.append([rec(3, key=5)])
    assert read_commit_hint(shard_paths(w.path)[0]) == w.committed == 3
    with h5py.File(w.path, "r", locking=False) as f:
        calls, committed = read_calls(f, 0, read_commit_hint(shard_paths(w.path)[0]))
    assert committed == 3 and [c.seq for c in calls] == [1, 2]
    assert calls[0].records[0].rows.shape == (2, 3)
    assert calls[0].records[1].rows is None and calls[0].records[1].nrows == 2
    assert calls[1].records[0].key0 == 5
    tail, _ = w.read_calls(2)  # only rows after the 2 already merged
    assert [c.seq for c in tail] == [2]
    assert list_shards(str(tmp_path)) == [w.path]
    assert writer_alive(w.path)
    w.close()
    assert not writer_alive(w.path)


def test_uncommitted_rows_are_ignored(tmp_path):
    w = ShardWriter(str(tmp_path))
    w.append([rec(1)])
    # Simulate a writer killed after writing log rows but before the commit record.
    log = w._file["log"]
    log.resize(log.shape[0] + 1, axis=0)
    log[-1] = [99, 0, 0, 0, 0, 1, 0]
    w._file.flush()
    calls, committed = read_calls(w._file, 0, read_commit_hint(shard_paths(w.path)[0]))
    assert committed == 1 and [c.seq for c in calls] == [1]
    w.close()
    with h5py.File(w.path, "r") as f:  # a closed shard keeps a copy of the record
        assert f["committed"][0] == 1


def test_deferred_calls_commit_together(tmp_path):
    w = ShardWriter(str(tmp_path))
    with w.deferred():
        w.append([rec(1)])
        w.append([rec(2)])
        assert w.committed == 0
    assert w.committed == 2
    calls, _ = w.read_calls(0)
    assert [len(c.records[0].rows) for c in calls] == [1, 2]
    w.close(delete=True)
    assert list_shards(str(tmp_path)) == []


def test_string_streams(tmp_path):
    w = ShardWriter(str(tmp_path))
    w.append(
        [
            Record(
                ("P", "c", "morphology_names"),
                0,
                0,
                np.array(["a", "bé"], dtype=object),
                2,
            )
        ]
    )
    calls, _ = w.read_calls(0)
    assert calls[0].records[0].rows.tolist() == ["a", "bé"]
    w.close()


def test_failed_creation_leaves_no_shard_and_no_open_file(tmp_path, monkeypatch):
    """A writer whose shard file cannot be created (disk full, permissions) releases
    its lock files and removes what it created; the next writer starts clean."""

    def fds() -> set[str]:
        return set(os.listdir("/proc/self/fd"))

    class Refused(OSError):
        pass

    def refuse(*args, **kwargs):
        raise Refused("no space left on device")

    before = fds()
    monkeypatch.setattr(shard_mod.h5py, "File", refuse)
    with pytest.raises(Refused):
        ShardWriter(str(tmp_path / "shards"))
    monkeypatch.undo()
    assert fds() <= before
    assert os.listdir(tmp_path / "shards") == []
    w = ShardWriter(str(tmp_path / "shards"))
    w.append([Record(("P", "a", "position"), 1, 0, np.ones((2, 3)), 2)])
    assert w.committed == 1
    w.close(delete=True)
