"""check / repair / info / compact (bsb_store.core.maintenance) on healthy and damaged
stores: every kind of damage that can be built by hand is reported, repair fixes what
it can and says so, a second repair does nothing."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest

from bsb_store.core import HDF5Engine, PlacementSet, layout, maintenance
from bsb_store.core.resources.connectivity import ConnectivitySet
from bsb_store.core.resources.morphologies import MorphologyData
from bsb_store.core.resources.placement import _stage_new_set
from bsb_store.core.writes import txn as txn_mod
from bsb_store.core.writes.shard import list_shards
from bsb_store.exceptions import (
    NotAStoreError,
    RecoveryNeededError,
    StoreExistsError,
    StoreNotFoundError,
)

pytestmark = pytest.mark.serial_only

POS0 = np.arange(15, dtype=float).reshape(5, 3)
POS1 = -np.arange(9, dtype=float).reshape(3, 3)
SRC = [[0, -1, -1], [1, -1, -1]]
DST = [[0, -1, -1], [2, -1, -1]]
MORPHO_POINTS = 4

# A writer that commits CALLS append calls to its shard (call i: i + 1 cells with
# x = 100 + i in chunk 0 of set "cells"), optionally writes an uncommitted tail, prints
# its shard path and waits to be killed.
WRITER = r"""
import sys, time
import numpy as np
from bsb_store.core import layout
from bsb_store.core.writes.shard import Record, ShardWriter

root, calls, tail = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"
w = ShardWriter(layout.shard_dir(root))
for i in range(calls):
    n = i + 1
    rows = np.column_stack([np.full(n, 100.0 + i), np.arange(n), np.zeros(n)])
    w.append([Record(("P", "cells", "count"), 0, 0, None, n),
              Record(("P", "cells", "position"), 0, 0, rows, n)])
if tail:
    log = w._file["log"]
    log.resize(log.shape[0] + 1, axis=0)
    log[-1] = [calls + 1, 0, 0, 0, 0, 1, 0]
    w._file.flush()
print(w.path, flush=True)
time.sleep(120)
"""


def make_store(path: Path) -> str:
    """A healthy store: 8 cells in 2 chunks (morphologies, labels), 2 connections in
    one block, one morphology, one file. Closed (nothing pending)."""
    e = HDF5Engine(path)
    e.create()
    ps = PlacementSet.create(e, "cells")
    ps.append_data((0, 0, 0), POS0, morphologies=([0, 1, 0, 1, 0], ["a", "b"]))
    ps.append_data((1, 0, 0), POS1)
    ps.label(["x"], [0, 2])
    cs = ConnectivitySet.create(e, "cells", "cells")
    cs.chunk_connect((0, 0, 0), (1, 0, 0), SRC, DST)
    pts = np.arange(MORPHO_POINTS * 3, dtype=float).reshape(-1, 3)
    e.morphologies.save("m", MorphologyData(points=pts, radii=np.ones(MORPHO_POINTS)))
    e.files.store("hello", id="f1")
    assert len(ps) == 8 and len(cs) == 2
    e.close()
    return e.root


def h5(path: str, mode: str = "r") -> h5py.File:
    """Raw h5py access, without HDF5's own file locking (as the engine opens it)."""
    return h5py.File(path, mode, locking=False)


def sha(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def codes(findings) -> set[str]:
    return {f.code for f in findings}


def spawn_writer(root: str, calls: int, tail: bool) -> tuple[subprocess.Popen, str]:
    p = subprocess.Popen(
        [sys.executable, "-c", WRITER, root, str(calls), "1" if tail else "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    line = p.stdout.readline().strip()
    assert line.endswith(".h5"), f"writer failed to start: {line!r}"
    return p, line


def kill(p: subprocess.Popen) -> None:
    os.kill(p.pid, signal.SIGKILL)
    p.wait(timeout=30)
    p.stdout.close()


def dead_writer_store(tmp_path: Path, calls: int = 3) -> tuple[str, str]:
    """A store whose dead writer (SIGKILLed) left committed, unmerged calls and an
    uncommitted tail in its shard."""
    root = make_store(tmp_path / "s.h5")
    p, shard = spawn_writer(root, calls, tail=True)
    kill(p)
    return root, shard


@pytest.fixture
def root(tmp_path) -> str:
    return make_store(tmp_path / "s.h5")


# ------------------------------------------------------------------------- healthy
def test_healthy_store_passes_with_exact_summary(root):
    report = maintenance.check(root)
    assert report.ok and report.findings == []
    s = report.summary
    assert s["placement"] == {"cells": {"cells": 8, "chunks": 2}}
    assert s["connectivity"] == {"cells_to_cells": {"connections": 2, "blocks": 1}}
    assert s["morphologies"] == 1 and s["files"] == 1
    assert s["shards"]["total"] == 0
    assert report.to_dict()["ok"] is True


def test_check_changes_nothing(root):
    before = sha(root)
    maintenance.check(root)
    maintenance.info(root)
    assert sha(root) == before


def test_repair_of_a_healthy_store_does_nothing(root):
    before = sha(root)
    report = maintenance.repair(root)
    assert report.actions == [] and not report.changed and report.ok
    assert sha(root) == before


# -------------------------------------------------------------------------- damage
def _del(path: str) -> Callable[[h5py.File], None]:
    def damage(f: h5py.File) -> None:
        del f[path]

    return damage


def _shrink(f: h5py.File) -> None:
    f["placement/cells/chunks/1/position"].resize(1, axis=0)


def _bad_registry(f: h5py.File) -> None:
    f["placement/cells"].attrs["columns"] = "{not json"


def _wrong_dtype(f: h5py.File) -> None:
    g = f["placement/cells"]
    cols = json.loads(g.attrs["columns"])
    cols["position"]["dtype"] = "<i4"
    g.attrs["columns"] = json.dumps(cols)


def _count_rows(f: h5py.File) -> None:
    f["placement/cells/index/count"].resize(1, axis=0)


def _morph_index(f: h5py.File) -> None:
    f["placement/cells/chunks/0/morphology"][1] = 7


def _label_id(f: h5py.File) -> None:
    f["placement/cells/labels/values"][3] = 9


def _mirror(f: h5py.File) -> None:
    keys = f["connectivity/cells_to_cells/index/key"][()]
    row = int(np.flatnonzero(keys[:, 0] == 0)[0])  # the "inc" block
    f["connectivity/cells_to_cells/index/count"][row] = 1


DAMAGE = {
    "missing-dataset": (_del("placement/cells/chunks/0/position"), "chunks/0"),
    "short-dataset": (_shrink, "1 rows but the index count is 3"),
    "columns-registry": (_bad_registry, "{not json"),
    "column-mismatch": (_wrong_dtype, "int32"),
    "missing-chunk-group": (_del("placement/cells/chunks/1"), "its 3 rows are lost"),
    "index-length": (_count_rows, "index/key has 2 rows but index/count has 1"),
    "morphology-index": (_morph_index, "outside [-1, 2)"),
    "label-set-id": (_label_id, "ids [9]"),
    "mirror-mismatch": (_mirror, "0->1: out 2, inc 1"),
    "missing-group": (_del("files"), "'/files'"),
    "morphology-damaged": (_del("morphologies/m/branches"), "Morphology 'm'"),
    "store-dataset": (_del("store/shards/applied"), "merged-shards table"),
}


@pytest.mark.parametrize("code", sorted(DAMAGE))
def test_damage_is_reported_and_not_invented_away(root, code):
    damage, text = DAMAGE[code]
    with h5(root, "r+") as f:
        damage(f)
    report = maintenance.check(root)
    assert not report.ok
    found = [f for f in report.errors if f.code == code]
    assert found, f"expected a {code!r} error, got {report.errors}"
    assert any(text in f.message for f in found), found
    assert not any(f.repairable for f in found)
    before = sha(root)
    fixed = maintenance.repair(root)
    assert fixed.actions == [] and not fixed.ok
    assert code in codes(fixed.after.errors)
    assert sha(root) == before


# ------------------------------------------------------------------ transactions
def _journal(root: str, complete: bool = True) -> None:
    """A transaction killed right after journaling: a new placement set staged, the
    chunk size written, nothing applied."""
    with h5(root, "r+") as f:
        txn = txn_mod.Transaction(f)
        _stage_new_set(txn, "extra")
        txn.write("store/chunk_size", 0, np.array([10.0, 20.0, 30.0]))
        txn_mod.write_journal(f, txn._ops, txn._payloads)
        if not complete:
            del f[txn_mod.JOURNAL].attrs["complete"]


def test_complete_journal_is_a_warning_that_repair_redoes(root):
    # Was bug journal-is-error: the next writable open redoes the journal, so it is a
    # repairable warning, and the store is checked as the redo leaves it.
    _journal(root)
    before = sha(root)
    report = maintenance.check(root)
    assert report.ok, [f.to_dict() for f in report.errors]
    (j,) = [f for f in report.warnings if f.code == "journal"]
    assert j.repairable and "complete but was not fully applied" in j.message
    assert "2 operations" in j.message and "as the redo will leave it" in j.message
    assert codes(report.findings) == {"journal"}  # the staged set is moved by the redo
    assert report.summary["placement"]["extra"] == {"cells": 0, "chunks": 0}
    assert sha(root) == before  # checked in memory, the root is untouched
    reader = HDF5Engine(root)
    reader._readonly = True  # a read-only reader (one that cannot finish it)
    with pytest.raises(RecoveryNeededError):
        PlacementSet.list(reader)  # refuses it until it is recovered
    reader._readonly = False
    reader.close()
    fixed = maintenance.repair(root)
    assert fixed.ok and fixed.after.findings == []
    assert "redid an interrupted transaction (2 journaled operations)" in fixed.actions
    with h5(root) as f:
        assert f["store/chunk_size"][()].tolist() == [10.0, 20.0, 30.0]
        assert "placement/extra/chunks" in f
        assert txn_mod.JOURNAL not in f and txn_mod.STAGING not in f
    before = sha(root)
    again = maintenance.repair(root)
    assert again.actions == [] and again.ok and sha(root) == before


def test_incomplete_journal_is_discarded(root):
    _journal(root, complete=False)
    report = maintenance.check(root)
    assert report.ok
    (j,) = [f for f in report.warnings if f.code == "journal"]
    assert "incomplete" in j.message and j.repairable
    assert "extra" not in report.summary["placement"]
    fixed = maintenance.repair(root)
    assert fixed.ok
    assert fixed.actions[0] == "discarded an incomplete transaction journal"
    assert "dropped 1 staged leftover objects" in fixed.actions
    with h5(root) as f:
        assert np.isnan(f["store/chunk_size"][()]).all() and "placement/extra" not in f


def _half_applied_merge(root: str, ops_applied: int, bad_path: bool = False) -> None:
    """A transaction killed in the middle of publishing: a new chunk 77 of ``cells``
    (its group, then the index's key and count grown by one row), journaled, and only
    the first ``ops_applied`` operations applied; the index is inconsistent."""
    with h5(root, "r+") as f:
        txn = txn_mod.Transaction(f)
        staged = txn.staging_path()
        f.create_group(staged)
        ix = "placement/cells/index"
        n = f[f"{ix}/key"].shape[0]
        txn.replace(staged, "placement/cells/chunks/77")
        txn.resize(f"{ix}/key", n + 1)
        txn.write(f"{ix}/key", n, np.array([[77]]))
        txn.resize(f"{ix}/count", n + 1)
        txn.write(f"{ix}/count", n, np.array([0]))
        if bad_path:  # a redo that cannot succeed
            txn.write("placement/cells/nothing-here", 0, np.array([1]))
        txn_mod.write_journal(f, txn._ops, txn._payloads)
        f.flush()
        txn_mod._apply(f, txn._ops[:ops_applied], txn._payloads)


def test_half_applied_journal_is_checked_as_redone(root):
    """A kill mid-publish: the half-applied index (key grown, count not) is what the
    redo fixes, so check reports only the journal, as a repairable warning."""
    _half_applied_merge(root, ops_applied=3)
    with h5(root) as f:  # the store as the kill left it is inconsistent
        ix = f["placement/cells/index"]
        assert ix["key"].shape[0] != ix["count"].shape[0]
    before = sha(root)
    report = maintenance.check(root)
    assert report.ok, [f.to_dict() for f in report.errors]
    assert codes(report.findings) == {"journal"}
    assert report.summary["placement"]["cells"] == {"cells": 8, "chunks": 3}
    assert sha(root) == before
    assert sorted(os.listdir(os.path.dirname(root))) == ["s.h5", "s.h5.lock"]
    e = HDF5Engine(root)
    ps = PlacementSet(e, "cells")
    assert len(ps) == 8 and len(ps.get_chunk_stats()) == 3  # the redo, by the engine
    ps.append_data((0, 0, 0), POS1)  # a writable open: the journal is redone
    e.close()
    assert maintenance.check(root).findings == []


def test_journal_whose_redo_fails_is_an_error(root):
    _half_applied_merge(root, ops_applied=1, bad_path=True)
    before = sha(root)
    report = maintenance.check(root)
    (j,) = [f for f in report.errors if f.code == "journal"]
    assert "redoing it fails" in j.message and "nothing-here" in j.message
    assert not j.repairable
    assert sha(root) == before


def test_unopenable_links_are_reported_not_hidden(root):
    """``Group.get`` answers None for a link that cannot be opened; check says so."""
    with h5(root, "r+") as f:
        f[txn_mod.JOURNAL] = h5py.SoftLink("/nowhere/journal")
        f["files/broken"] = h5py.SoftLink("/nowhere/file")
        f["placement/cells/chunks/0/labels_bad"] = h5py.SoftLink("/nowhere/x")
    before = sha(root)
    report = maintenance.check(root)
    broken = {f.path for f in report.errors if f.code == "unopenable"}
    assert broken == {
        "/store/journal",
        "/files/broken",
        "/placement/cells/chunks/0/labels_bad",
    }, [f.to_dict() for f in report.findings]
    assert all("cannot be opened" in f.message for f in report.errors)
    assert sha(root) == before


def test_staging_leftovers_are_a_warning_that_repair_drops(root):
    with h5(root, "r+") as f:
        f.create_group(f"{txn_mod.STAGING}/abc").create_dataset("x", data=np.arange(9))
    report = maintenance.check(root)
    assert report.ok
    (w,) = report.warnings
    assert w.code == "staging" and w.repairable and "1 staged objects" in w.message
    fixed = maintenance.repair(root)
    assert fixed.actions == ["dropped 1 staged leftover objects"]
    assert fixed.after.findings == []
    assert maintenance.repair(root).actions == []


# ------------------------------------------------------------------------- shards
def test_dead_writer_shard_is_reported_then_merged(tmp_path):
    root, shard = dead_writer_store(tmp_path)
    report = maintenance.check(root)
    assert not report.ok  # an error (docs/cli.rst): the root file alone lacks them
    (err,) = report.errors
    assert err.code == "pending-dead" and err.repairable and err.path == shard
    assert "bsb-store repair" in err.message
    assert "3 committed append calls (6 log records)" in err.message
    tail = [w for w in report.warnings if w.code == "uncommitted-tail"]
    assert tail and "1 uncommitted log records" in tail[0].message
    assert report.summary["shards"] == {
        "total": 1,
        "live": 0,
        "dead": 1,
        "pending_calls": 3,
    }
    with h5(root) as f:  # check merged nothing
        assert f["placement/cells/index/count"][()].tolist() == [5, 3]
    assert os.path.exists(shard)

    fixed = maintenance.repair(root)
    name = os.path.basename(shard)[:-3]
    assert fixed.ok and fixed.after.findings == []
    assert any(
        f"merged 3 calls, 6 committed log records of dead writer '{name}'" in a
        for a in fixed.actions
    )
    assert "dropped its uncommitted tail of 1 log records" in fixed.actions
    assert not os.path.exists(shard) and list_shards(root + ".shards") == []
    with h5(root) as f:
        n = int(f["placement/cells/index/count"][0])
        pos = f["placement/cells/chunks/0/position"][:n]
    assert n == 5 + 1 + 2 + 3
    assert pos[:5].tolist() == POS0.tolist()
    assert pos[5:, 0].tolist() == [100, 101, 101, 102, 102, 102]
    assert pos[5:, 1].tolist() == [0, 0, 1, 0, 1, 2]
    assert len(PlacementSet(HDF5Engine(root), "cells")) == 8 + 6
    before = sha(root)
    assert maintenance.repair(root).actions == [] and sha(root) == before


def test_live_writer_pending_data_is_only_a_warning(root):
    p, shard = spawn_writer(root, 2, tail=False)
    try:
        report = maintenance.check(root)
        assert report.ok
        (w,) = report.warnings
        assert w.code == "pending-live" and w.path == shard and not w.repairable
        assert "2 committed append calls (4 log records)" in w.message
        assert maintenance.repair(root).actions == []  # nothing to recover
        assert os.path.exists(shard)
    finally:
        kill(p)
    report = maintenance.check(root)  # now its writer is dead: an error, repairable
    assert not report.ok and [w.code for w in report.errors] == ["pending-dead"]
    assert report.repairable


def test_unreadable_empty_shard_and_orphan_sidecar(root):
    sdir = Path(root + ".shards")
    sdir.mkdir(exist_ok=True)
    (sdir / "host-1-dead.h5").write_bytes(b"")  # killed before its first flush
    (sdir / "host-2-gone.alive").write_bytes(b"")
    report = maintenance.check(root)
    assert report.ok
    assert codes(report.warnings) == {"shard-unreadable", "orphan-sidecar"}
    assert all(w.repairable for w in report.warnings)
    fixed = maintenance.repair(root)
    assert "removed the empty, unreadable shard of dead writer 'host-1-dead'" in (
        fixed.actions
    )
    assert "removed the orphan shard sidecar 'host-2-gone.alive'" in fixed.actions
    assert sorted(os.listdir(sdir)) == [] and fixed.after.findings == []


def test_shard_behind_the_root_is_an_error(tmp_path):
    root, shard = dead_writer_store(tmp_path, calls=1)
    name = os.path.basename(shard)[:-3]
    with h5(root, "r+") as f:
        for ds, value in (("name", name), ("applied", 50)):
            d = f[f"store/shards/{ds}"]
            d.resize(1, axis=0)
            d[0] = value
    report = maintenance.check(root)
    assert "shard-behind" in codes(report.errors)


# ---------------------------------------------------------------- not a store
@pytest.mark.parametrize("kind", ["zero-byte", "foreign", "truncated", "directory"])
def test_not_a_store_is_refused_without_leaving_a_lock_file(tmp_path, kind):
    path = tmp_path / "x.h5"
    if kind == "zero-byte":
        path.write_bytes(b"")
    elif kind == "foreign":
        with h5py.File(path, "w") as f:
            f["data"] = np.arange(3)
    elif kind == "truncated":
        good = make_store(tmp_path / "good.h5")
        path.write_bytes(Path(good).read_bytes()[:4000])
    else:
        path.mkdir()
    for fn in (maintenance.check, maintenance.repair, maintenance.info):
        with pytest.raises(NotAStoreError, match=r"x\.h5"):
            fn(path)
    assert not os.path.exists(str(path) + ".lock")


def test_missing_root(tmp_path):
    with pytest.raises(StoreNotFoundError, match="No store"):
        maintenance.check(tmp_path / "nope.h5")


# ------------------------------------------------------------------------ garbage
def _garbage(root: str, rows: int = 20000) -> None:
    with h5(root, "r+") as f:
        ds = f["placement/cells/chunks/0/position"]
        ds.resize(5 + rows, axis=0)
        ds[5:] = 1.0
        f["placement/cells/chunks/77/position"] = np.zeros((4, 3))  # orphan chunk
        f["placement/cells/chunks/1/stray"] = np.zeros(3)  # unregistered


def test_garbage_is_a_warning_with_reclaimable_bytes(root):
    _garbage(root)
    report = maintenance.check(root)
    assert report.ok
    assert codes(report.warnings) == {
        "garbage-tail",
        "orphan-chunk",
        "unregistered-dataset",
    }
    (tail,) = [w for w in report.warnings if w.code == "garbage-tail"]
    assert "20000 rows past" in tail.message and "468.8 KiB" in tail.message
    assert maintenance.repair(root).actions == []  # compaction's job, not repair's


def _snapshot(root: str) -> dict:
    e = HDF5Engine(root)
    ps = PlacementSet(e, "cells")
    cs = ConnectivitySet(e, "cells_to_cells")
    snap = {
        "pos": ps.load_positions().tolist(),
        "morph": ps.load_morphology_indices()[0].tolist(),
        "labels": [sorted(s) for s in ps.get_unique_labels()],
        "conns": [
            (d, a.id, b.id, x.tolist(), y.tolist())
            for d, a, b, (x, y) in cs.flat_iter_connections()
        ],
        "file": e.files.load("f1")[0],
        "morpho": e.morphologies.load("m").points.tolist(),
        "storage_id": e.storage_id,
    }
    e.close()
    return snap


def test_compact_drops_garbage_and_keeps_every_live_row(root):
    expected = _snapshot(root)
    _garbage(root)
    report = maintenance.compact(root)
    assert report.refused is None and report.target == root
    assert report.bytes_after < report.bytes_before - 400_000
    assert report.bytes_after == os.path.getsize(root)
    after = maintenance.check(root)
    assert after.ok and after.findings == []
    assert _snapshot(root) == expected
    assert [p for p in os.listdir(os.path.dirname(root)) if ".compact-" in p] == []


def test_compact_into_out_leaves_the_root(root, tmp_path):
    _garbage(root)
    before = sha(root)
    out = tmp_path / "out.h5"
    report = maintenance.compact(root, out)
    assert report.target == str(out) and sha(root) == before
    assert maintenance.check(out).findings == []
    with pytest.raises(StoreExistsError):
        maintenance.compact(root, out)


def test_compact_merges_pending_data_first(tmp_path):
    root = make_store(tmp_path / "s.h5")
    p, _ = spawn_writer(root, 2, tail=False)
    try:
        report = maintenance.compact(root)
    finally:
        kill(p)
    assert any("merged 2 calls" in m for m in report.merged)
    with h5(root) as f:
        assert f["placement/cells/index/count"][()].tolist() == [5 + 1 + 2, 3]


def test_compact_refuses_a_store_with_errors(root):
    with h5(root, "r+") as f:
        del f["placement/cells/chunks/0/position"]
    before = sha(root)
    report = maintenance.compact(root)
    assert report.refused and "repair" in report.refused
    assert "missing-dataset" in codes(report.errors) and sha(root) == before


def test_failed_compact_leaves_the_root_and_no_temp(root, monkeypatch):
    from bsb_store.core.maintenance import _compact

    def boom(*args):
        raise OSError("disk full")

    monkeypatch.setattr(_compact, "_copy_live", boom)
    before = sha(root)
    with pytest.raises(OSError, match="disk full"):
        maintenance.compact(root)
    assert sha(root) == before
    assert [p for p in os.listdir(os.path.dirname(root)) if ".compact-" in p] == []


def test_leftover_compaction_file_is_removed_by_repair(root):
    leftover = root + ".compact-0123abcd.tmp"
    Path(leftover).write_bytes(b"partial")
    (w,) = maintenance.check(root).warnings
    assert w.code == "compact-temp" and w.path == leftover
    fixed = maintenance.repair(root)
    assert fixed.actions == [
        f"removed the leftover compaction file '{os.path.basename(leftover)}'"
    ]
    assert not os.path.exists(leftover)


# --------------------------------------------------------------------------- info
def test_info_numbers(root):
    d = maintenance.info(root)
    e = HDF5Engine(root)
    # Later versions add keys (labels, extent, ...: tests/cli/test_ls.py); these stay.
    assert list(d["placement"]) == ["cells"]
    assert (
        d["placement"]["cells"].items()
        >= {
            "cells": 8,
            "chunks": 2,
            "columns": ["position", "morphology", "labels"],
            "morphology_names": 2,
        }.items()
    )
    assert (
        d["connectivity"]["cells_to_cells"].items()
        >= {
            "pre": "cells",
            "post": "cells",
            "connections": 2,
            "blocks": 1,
            "local_chunks": 1,
        }.items()
    )
    assert d["morphologies"] == {"count": 1, "points": MORPHO_POINTS, "names": ["m"]}
    assert d["files"] == {"count": 1, "bytes": 5, "active_config": None}
    assert d["chunk_size"] is None
    assert d["provenance"]["storage_id"] == e.storage_id
    assert d["provenance"]["state_id"] == e.state_id
    assert d["provenance"]["engine_version"] == "0.1.0"
    assert d["sizes"]["file_bytes"] == os.path.getsize(root)
    placement = 8 * (24 + 8 + 1)  # position, morphology index, 1-byte label id
    connections = 4 * 2 * 24  # 2 rows in each direction, 2 columns of 3 int64
    with h5(root) as f:
        morpho = sum(
            o.nbytes for o in f["morphologies/m"].values() if isinstance(o, h5py.Dataset)
        )
    assert d["sizes"]["data_bytes"] == placement + connections + morpho + 5
    assert d["pending"]["shards"] == 0
    e.close()


def test_info_counts_pending_shard_data(tmp_path):
    root, _ = dead_writer_store(tmp_path, calls=4)
    d = maintenance.info(root)
    assert d["pending"] == {
        "shards": 1,
        "live_writers": 0,
        "dead_writers": 1,
        "calls": 4,
        "records": 8,
        "missing_writers": 0,
        "missing": None,
    }
    assert d["placement"]["cells"]["cells"] == 8  # the root alone


def test_check_reports_progress(root):
    seen: list[tuple[str, int | None]] = []

    def progress(items, desc, total):
        seen.append((desc, total))
        return items

    maintenance.check(root, progress=progress)
    assert ("placement/cells", 2) in seen
    assert ("connectivity/cells_to_cells", 2) in seen


def test_root_lock_layout_is_used(root):
    maintenance.check(root)
    assert os.path.exists(layout.lock_path(root))
