"""Shards this bsb-store must not merge (newer format, foreign files, rows that do not
decode) and shards of writers killed while starting (reliability bugs shard-version
and unreadable-dead-shard)."""

from __future__ import annotations

import hashlib
import struct
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest

from bsb_store.core import HDF5Engine, PlacementSet, layout
from bsb_store.core.maintenance import check, repair
from bsb_store.core.writes.shard import (
    SHARD_FORMAT,
    ShardWriter,
    check_shard_format,
    read_calls,
)
from bsb_store.exceptions import FormatError, FormatVersionError, PendingDataWarning

pytestmark = pytest.mark.serial_only


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = tmp_path / "s.h5"
    e = HDF5Engine(path)
    e.create()
    PlacementSet.create(e, "cells").append_data((0, 0, 0), np.ones((4, 3)))
    e.close()
    Path(layout.shard_dir(str(path))).mkdir()
    return path


def fake_shard(root: Path, name: str, version=SHARD_FORMAT, streams=(b'["P"]',)):
    """A dead writer's shard with one committed log row (commit record 1)."""
    path = Path(layout.shard_dir(str(root))) / f"{name}.h5"
    with h5py.File(path, "w") as f:
        if version is not None:
            f.attrs["bsb_store_shard"] = version
        f["log"] = np.array([[1, 0, 0, 0, -1, 1]], dtype=np.int64)
        f["committed"] = np.ones(1, np.int64)
        f["streams"] = np.array(list(streams), dtype=object)
    path.with_suffix(".lock").write_bytes(struct.pack("<q", 1))
    return path


def merge_warnings(root: Path) -> list[str]:
    """The warnings of one transaction (which merges every shard)."""
    e = HDF5Engine(root)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        PlacementSet.create(e, "other")
    e.close()
    assert all(issubclass(w.category, PendingDataWarning) for w in caught)
    return [str(w.message) for w in caught]


def test_read_calls_checks_the_format(tmp_path):
    w = ShardWriter(str(tmp_path))
    assert w._file.attrs["bsb_store_shard"] == SHARD_FORMAT
    assert check_shard_format(w._file)
    w.close()
    p = tmp_path / "x.h5"
    for version, error in (
        (SHARD_FORMAT + 1, FormatVersionError),
        (0, FormatError),
        ("1", FormatError),
    ):
        with h5py.File(p, "w") as f:
            f.attrs["bsb_store_shard"] = version
            f["committed"] = np.zeros(1, np.int64)
        with h5py.File(p, "r") as f, pytest.raises(error, match=r"x\.h5"):
            read_calls(f, 0)
    with h5py.File(p, "w") as f:
        f["something"] = np.zeros(1)
    with h5py.File(p, "r") as f, pytest.raises(FormatError, match="not a bsb-store"):
        read_calls(f, 0)


@pytest.mark.parametrize(
    "kind, expect",
    [
        ("newer", "shard format version 3"),
        ("foreign", "not a bsb-store shard"),
        ("undecodable", "cannot be decoded"),
    ],
)
def test_unusable_shards_are_skipped_and_kept(root, kind, expect):
    """Merges warn and skip such a shard, the root is unchanged, check reports it as
    an error and repair leaves it alone."""
    if kind == "newer":
        shard = fake_shard(root, "host-1-a", version=3, streams=[b"not json"])
    elif kind == "foreign":
        shard = Path(layout.shard_dir(str(root))) / "foreign.h5"
        with h5py.File(shard, "w") as f:
            f["data"] = np.arange(3)
        shard.with_suffix(".lock").write_bytes(struct.pack("<q", 1))
    else:
        shard = fake_shard(root, "host-1-b", streams=[b"not json"])
    before = sha(root)
    e = HDF5Engine(root)
    with pytest.warns(PendingDataWarning, match=expect):
        assert len(PlacementSet(e, "cells")) == 4
    e.close()
    assert sha(root) == before and shard.exists()
    report = check(root)
    (err,) = report.errors
    assert err.code == "shard-format" and expect in err.message
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PendingDataWarning)
        fixed = repair(root)
    assert shard.exists() and not fixed.ok


def test_dead_shard_killed_while_starting_is_retired_silently(root):
    sdir = Path(layout.shard_dir(str(root)))
    (sdir / "host-2-c.h5").write_bytes(root.read_bytes()[:96])  # torn creation
    (sdir / "host-2-c.lock").write_bytes(b"")  # no commit record
    # A shard file torn after its datasets but before its format attribute.
    with h5py.File(sdir / "host-2-d.h5", "w") as f:
        f["log"] = np.zeros((0, 6), np.int64)
    # ... and one torn after its format attribute, before its log.
    with h5py.File(sdir / "host-2-e.h5", "w") as f:
        f.attrs["bsb_store_shard"] = SHARD_FORMAT
        f["committed"] = np.zeros(1, np.int64)
    assert check(root).ok
    assert merge_warnings(root) == []
    assert sorted(p.name for p in sdir.iterdir()) == []


def test_unreadable_dead_shard_with_committed_rows_still_warns(root):
    sdir = Path(layout.shard_dir(str(root)))
    shard = sdir / "host-3-e.h5"
    shard.write_bytes(root.read_bytes()[:96])
    (sdir / "host-3-e.lock").write_bytes(struct.pack("<q", 3))  # committed 3 rows
    msgs = merge_warnings(root)
    assert msgs and all(
        "could not be read" in m and "committed 3 log records" in m for m in msgs
    )
    assert shard.exists()
    assert {f.code for f in check(root).errors} == {"shard-lost"}
