"""Several processes on one store at once: independent interpreters (no MPI) and the
ranks of ``mpiexec -n 2`` / ``-n 4``, appending, connecting, labelling and reading.
Nothing may be lost or duplicated, nobody may deadlock, and a lock that cannot be had
must end in a clear error.

Run the MPI part with::

    mpiexec -n 4 python -m pytest -m "not serial_only" tests/reliability/test_concurrent.py
"""

from __future__ import annotations

import glob
import hashlib
import os
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from bsb_store.core import ConnectivitySet, HDF5Engine, PlacementSet
from bsb_store.core.maintenance import check
from bsb_store.exceptions import LockTimeoutError

from . import model as M
from .workers import BASE_CELLS, feed_rows, label_ids, proc_chunk

WORKERS = os.path.join(os.path.dirname(__file__), "workers.py")
RECLAIMABLE = {"garbage-tail", "unregistered-dataset", "orphan-chunk"}


def spawn(*args, env=None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, WORKERS, *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )


def finish(procs: dict[str, subprocess.Popen], timeout: float = 120) -> dict[str, str]:
    """Wait for every process (a deadlock fails here); their outputs."""
    out = {}
    for name, p in procs.items():
        stdout, stderr = p.communicate(timeout=timeout)
        assert p.returncode == 0, f"{name} failed:\n{stderr}"
        out[name] = stdout
    return out


def store_with_base(root, locking: str | None = None) -> HDF5Engine:
    """A store whose chunk (0, 0, 0) holds BASE_CELLS cells ``[-1, j, 0]``."""
    e = HDF5Engine(root, locking=locking)
    e.create()
    ps = PlacementSet.create(e, M.CELLS)
    ConnectivitySet.create(e, M.CELLS, M.CELLS)
    base = np.column_stack(
        [np.full(BASE_CELLS, -1), np.arange(BASE_CELLS), np.zeros(BASE_CELLS)]
    )
    ps.append_data((0, 0, 0), base.astype(float))
    e.close()
    return e


def expect_appends(engine: HDF5Engine, writers, calls: int) -> None:
    """Every call of every writer stored once, whole, in its chunk, in its order."""
    ps = PlacementSet(engine, M.CELLS)
    pos = ps.load_positions()
    total = sum(i % 4 + 1 for i in range(calls))
    assert len(pos) == BASE_CELLS + len(writers) * total
    assert np.array_equal(pos[:BASE_CELLS, 1], np.arange(BASE_CELLS))
    for w in writers:
        for chunk in {proc_chunk(i) for i in range(calls)}:
            ps.set_chunk_filter([chunk])
            got = ps.load_positions()
            got = got[got[:, 0] == w]
            want = [feed_rows(w, i) for i in range(calls) if proc_chunk(i) == chunk]
            assert np.array_equal(got, np.concatenate(want)), (w, chunk)
    ps.set_chunk_filter(None)
    cs = ConnectivitySet(engine, M.CONNS)
    assert len(cs) == len(writers) * total
    for _, local, _, (src, dst) in cs.flat_iter_connections("out"):
        assert np.array_equal(src, dst)
        for w in writers:
            calls_in = sorted({i for i in range(calls) if proc_chunk(i) == local.coords})
            assert sorted(set(src[src[:, 0] == w][:, 1].tolist())) == calls_in


# ------------------------------------------------------- independent processes
@pytest.mark.serial_only
def test_processes_append_connect_label_and_read_at_once(tmp_path):
    """3 appenders, 2 labellers, 2 file writers and a reader, 8 interpreters at once."""
    e = store_with_base(tmp_path / "store.h5")
    writers, calls = (1, 2, 3), 60
    procs = {f"append{w}": spawn("append", e.root, w, calls) for w in writers}
    labels = {"x": 2, "y": 3}  # label -> every n-th base cell
    procs |= {
        f"label-{lab}": spawn("label", e.root, lab, n, 6) for lab, n in labels.items()
    }
    procs |= {f"file{n}": spawn("file", e.root, "cfg", 15) for n in range(2)}
    procs["read"] = spawn("read", e.root, 3)
    out = finish(procs)
    assert int(out["read"].split()[-1]) > 5  # the reader really read while others wrote
    e = HDF5Engine(e.root)
    expect_appends(e, writers, calls)
    ps = PlacementSet(e, M.CELLS)
    for lab, step in labels.items():
        assert ps.get_labelled([lab]).tolist() == label_ids(step)
    content, meta = e.files.load("cfg")
    unit = content[: content.index(">") + 1]
    assert content == (unit * len(content))[: len(content)]
    assert meta["content_sha256"] == hashlib.sha256(content.encode()).hexdigest()
    e.close()
    assert not glob.glob(e.root + ".shards/*")  # every writer merged, removed its shard
    assert {f.code for f in check(e.root).findings} <= RECLAIMABLE


def hold_lock(root: str, seconds: float, publish: bool = False) -> subprocess.Popen:
    """A process that holds the exclusive root lock of ``root`` for ``seconds`` (after
    publishing a transaction of its own, with ``publish``)."""
    code = textwrap.dedent(f"""
        import portalocker, time
        from bsb_store.core import HDF5Engine
        if {publish!r}:
            HDF5Engine({root!r}).files.store("from another process", id="other")
        fh = open({root + ".lock"!r}, "a+b")
        portalocker.lock(fh, portalocker.LockFlags.EXCLUSIVE)
        print("locked", flush=True)
        time.sleep({seconds})
    """)
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "locked"
    return p


def timed_appends(ps, cs, writer: int, calls: range) -> float:
    t0 = time.monotonic()
    for i in calls:
        ps.append_data(proc_chunk(i), feed_rows(writer, i))
        cs.chunk_connect(proc_chunk(i), (0, 0, 0), [[i, -1, -1]], [[writer, -1, -1]])
    return time.monotonic() - t0


@pytest.mark.serial_only
def test_appends_do_not_wait_for_a_transaction_of_another_process(tmp_path):
    """DESIGN: no cross-process lock on the append path. While another process holds
    the root's exclusive lock (a long transaction), appends return at once."""
    e = store_with_base(tmp_path / "store.h5")
    ps, cs = PlacementSet(e, M.CELLS), ConnectivitySet(e, M.CONNS)
    ps.append_data((1, 0, 0), feed_rows(7, 0))
    holder = hold_lock(e.root, 3)
    try:
        elapsed = timed_appends(ps, cs, 7, range(1, 40))
        assert elapsed < 1.0, f"78 appends took {elapsed:.2f} s behind a root lock"
        assert holder.poll() is None  # the lock was held all along
    finally:
        holder.kill()
        holder.wait()
    assert len(ps) == BASE_CELLS + sum(i % 4 + 1 for i in range(40))
    assert len(cs) == 39
    e.close()


@pytest.mark.serial_only
def test_appends_do_not_wait_after_another_process_published(tmp_path):
    # Was bug append-waits: the first append after any transaction re-read the set's
    # column specs under the shared root lock.
    e = store_with_base(tmp_path / "store.h5")
    ps, cs = PlacementSet(e, M.CELLS), ConnectivitySet(e, M.CONNS)
    ps.append_data((1, 0, 0), feed_rows(7, 0))
    holder = hold_lock(e.root, 2, publish=True)
    try:
        elapsed = timed_appends(ps, cs, 7, range(1, 3))
    finally:
        holder.kill()
        holder.wait()
    assert elapsed < 1.0, f"4 appends took {elapsed:.2f} s behind a root lock"


@pytest.mark.serial_only
def test_lock_timeouts_give_a_clear_error_and_change_nothing(tmp_path):
    e = store_with_base(tmp_path / "store.h5")
    before = sha256(e.root)
    holder = hold_lock(e.root, 10)
    code = textwrap.dedent(f"""
        import time
        from bsb_store.core import HDF5Engine, PlacementSet
        from bsb_store.core.maintenance import check
        from bsb_store.exceptions import LockTimeoutError
        e = HDF5Engine({e.root!r})
        calls = [
            ("read", lambda: len(PlacementSet(e, "cells"))),
            ("write", lambda: e.files.store("x", id="new")),
            ("check", lambda: check(e.root)),
        ]
        for name, call in calls:
            t0 = time.monotonic()
            try:
                call()
            except LockTimeoutError as err:
                print(name, round(time.monotonic() - t0, 2), str(err), flush=True)
    """)
    try:
        out = subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, "BSB_STORE_LOCK_TIMEOUT": "0.3"},
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        holder.kill()
        holder.wait()
    lines = out.stdout.splitlines()
    assert [line.split()[0] for line in lines] == ["read", "write", "check"], out.stderr
    for line in lines:
        _, seconds, message = line.split(" ", 2)
        assert 0.25 <= float(seconds) < 3
        assert e.root + ".lock" in message and "within 0.3 s" in message
        assert "BSB_STORE_LOCK_TIMEOUT" in message and "BSB_STORE_LOCKING=none" in message
    assert sha256(e.root) == before
    assert issubclass(LockTimeoutError, TimeoutError)


def sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def unlocked_work(root: str) -> float:
    t0 = time.monotonic()
    n = HDF5Engine(root, locking="none")
    ps = PlacementSet(n, M.CELLS)
    ps.append_data((1, 0, 0), feed_rows(9, 0))
    ps.label(["z"], [0, 1])
    assert len(ps) == BASE_CELLS + 1
    n.close()
    return time.monotonic() - t0


@pytest.mark.serial_only
def test_locking_none_takes_no_lock(tmp_path):
    """``locking="none"`` (for file systems without flock) never touches a lock: it
    works while another process holds the root lock, where ``flock`` would wait."""
    e = store_with_base(tmp_path / "store.h5", locking="none")
    holder = hold_lock(e.root, 5)
    try:
        assert unlocked_work(e.root) < 2
        assert holder.poll() is None
    finally:
        holder.kill()
        holder.wait()
    ps = PlacementSet(HDF5Engine(e.root, locking="none"), M.CELLS)
    assert ps.get_labelled(["z"]).tolist() == [0, 1]


@pytest.mark.serial_only
def test_locking_none_is_honoured_after_a_flock_engine_on_the_same_root(tmp_path):
    e = store_with_base(tmp_path / "store.h5")  # a flock engine made the state
    holder = hold_lock(e.root, 3)
    try:
        assert unlocked_work(e.root) < 2
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.serial_only
@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
def test_close_releases_the_lock_file(tmp_path):
    def open_fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    before = open_fds()
    for i in range(20):
        e = HDF5Engine(tmp_path / f"s{i}.h5")
        e.create()
        PlacementSet.create(e, "c")
        e.close()
    assert open_fds() <= before


# ------------------------------------------------------------------------- MPI
@pytest.fixture
def mpi_store(shared_dir, comm):
    e = HDF5Engine(shared_dir / "store.h5", comm)
    e.create()
    if comm.Get_rank() == 0:
        PlacementSet.create(e, M.CELLS)
        ConnectivitySet.create(e, M.CELLS, M.CELLS)
    comm.Barrier()
    yield e
    comm.Barrier()
    e.close()


def rank_rows(rank: int, i: int) -> np.ndarray:
    """Rows of call ``i`` of rank ``rank``: ``[rank, i, row]``, 1-4 of them."""
    return feed_rows(rank, i)


@pytest.mark.parallel_only
@pytest.mark.timeout(240)
def test_mpi_ranks_append_connect_label_and_read_at_once(mpi_store, comm):
    """Every rank appends and connects while reading; then every rank labels its own
    cells and connects by cell index while the others do the same. Every rank then
    sees every call exactly once."""
    e, rank, size = mpi_store, comm.Get_rank(), comm.Get_size()
    ps, cs = PlacementSet(e, M.CELLS), ConnectivitySet(e, M.CONNS)
    calls, last = 40, 0
    for i in range(calls):
        ps.append_data(proc_chunk(i), rank_rows(rank, i))
        cs.chunk_connect(proc_chunk(i), (0, 0, 0), [[i, rank, -1]], [[rank, i, -1]])
        if i % 8 == 7:  # reads (and merges) while the other ranks append
            n = len(ps)
            assert n >= last + sum(j % 4 + 1 for j in range(i - 7, i + 1))
            last = n
    comm.Barrier()
    per_rank = sum(i % 4 + 1 for i in range(calls))
    assert len(ps) == size * per_rank and len(cs) == size * calls
    comm.Barrier()  # every rank counted before any rank connects more below
    pos = ps.load_positions()
    mine = np.flatnonzero(pos[:, 0] == rank)
    ps.label([f"r{rank}"], mine)  # transactions of every rank at once
    cs.connect(ps, ps, mine[:5], mine[:5])
    comm.Barrier()
    pos = ps.load_positions()
    for r in range(size):
        assert (
            ps.get_labelled([f"r{r}"]).tolist() == np.flatnonzero(pos[:, 0] == r).tolist()
        )
        for i in range(calls):
            got = pos[(pos[:, 0] == r) & (pos[:, 1] == i)]
            assert np.array_equal(got, rank_rows(r, i)), (r, i)
    assert len(cs) == size * (calls + 5)
    assert comm.allgather(len(ps)) == [size * per_rank] * size


@pytest.mark.parallel_only
@pytest.mark.timeout(240)
def test_mpi_ranks_store_files_and_morphologies_at_once(mpi_store, comm):
    from bsb_store.core.resources.morphologies import MorphologyData

    e, rank, size = mpi_store, comm.Get_rank(), comm.Get_size()
    for r in range(5):
        e.files.store(M.file_content(rank * 100 + r, 2000), id=f"f{rank}", overwrite=True)
        e.files.store(
            M.file_content(rank * 100 + r, 500 + r), id="shared", overwrite=True
        )
        points, radii = M.morphology_arrays(rank * 100 + r, 20 + r)
        e.morphologies.save(
            f"m{rank}", MorphologyData(points=points, radii=radii), overwrite=True
        )
    comm.Barrier()
    for r in range(size):
        assert e.files.load(f"f{r}")[0] == M.file_content(r * 100 + 4, 2000)
        m = e.morphologies.load(f"m{r}")
        assert len(m) == 24 and np.all(m.points == r * 100 + 4)
    shared = e.files.load("shared")[0]
    assert shared in {M.file_content(r * 100 + 4, 504) for r in range(size)}
    assert sorted(e.files.all()) == sorted([f"f{r}" for r in range(size)] + ["shared"])


@pytest.mark.parallel_only
@pytest.mark.timeout(240)
def test_mpi_collectives_between_independent_writes_do_not_deadlock(mpi_store, comm):
    """Collective clears interleaved with independent appends and transactions of
    every rank: every collective returns on every rank, with the same outcome."""
    e, rank, size = mpi_store, comm.Get_rank(), comm.Get_size()
    ps = PlacementSet(e, M.CELLS)
    for round_ in range(3):
        for i in range(10):
            ps.append_data(proc_chunk(i + rank), rank_rows(rank, i))
        ps.label([f"round{round_}"], [0])
        e.clear_placement()  # collective: flushes every rank's appends, then clears
        assert len(PlacementSet.require(e, M.CELLS)) == 0
        comm.Barrier()
    assert comm.allgather(PlacementSet.list(e)) == [[M.CELLS]] * size
