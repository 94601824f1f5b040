"""Several processes on one store: concurrent appends, readers, killed writers."""

import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from bsb_store.core import HDF5Engine, PlacementSet

from .workers import check_calls

WORKERS = os.path.join(os.path.dirname(__file__), "workers.py")


def spawn(root, worker, n):
    return subprocess.Popen(
        [sys.executable, WORKERS, "append", str(root), str(worker), str(n)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.serial_only
def test_two_processes_append_to_one_set_without_loss(tmp_path):
    e = HDF5Engine(tmp_path / "s.h5")
    e.create()
    PlacementSet.create(e, "cells")
    procs = [spawn(e.root, w, 60) for w in (1, 2)]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    pos = PlacementSet(e, "cells").load_positions()
    for w in (1, 2):
        assert check_calls(pos, w) == list(range(60))
    assert len(pos) == 2 * sum(i % 4 + 1 for i in range(60))
    # Insertion order inside a chunk follows each writer's own order.
    for w in (1, 2):
        mine = pos[pos[:, 0] == w]
        for chunk in range(3):
            calls = [int(i) for i in mine[:, 1] if int(i) % 3 == chunk]
            assert calls == sorted(calls)
    # The writers merged and removed their shards (and the emptied folder).
    assert not os.path.exists(e.root + ".shards")


@pytest.mark.serial_only
def test_reader_sees_every_returned_append(tmp_path):
    e = HDF5Engine(tmp_path / "s.h5")
    e.create()
    ps = PlacementSet.create(e, "cells")
    p = spawn(e.root, 7, 40)
    try:
        seen = 0
        for line in p.stdout:
            returned = int(line)
            if returned % 5:
                continue
            calls = check_calls(ps.load_positions(), 7)
            # Every call that returned before this read began is visible.
            assert calls[: returned + 1] == list(range(returned + 1))
            seen += 1
        assert seen == 8
    finally:
        p.wait(timeout=60)
    assert check_calls(ps.load_positions(), 7) == list(range(40))


@pytest.mark.serial_only
@pytest.mark.parametrize("seed", range(6))
def test_killed_writer_keeps_exactly_its_returned_calls(tmp_path, seed):
    rnd = random.Random(seed)
    e = HDF5Engine(tmp_path / "s.h5")
    e.create()
    ps = PlacementSet.create(e, "cells")
    p = spawn(e.root, 3, 100000)
    returned = -1
    deadline = time.monotonic() + rnd.uniform(0.3, 1.5)
    for line in p.stdout:
        returned = int(line)
        if time.monotonic() > deadline:
            break
    os.kill(p.pid, signal.SIGKILL)
    for line in p.stdout:  # calls that returned between our last read and the kill
        returned = int(line)
    p.wait()
    calls = check_calls(ps.load_positions(), 3)
    # Every returned call, plus possibly the one in flight (whole), nothing else.
    assert calls[: returned + 1] == list(range(returned + 1))
    assert len(calls) in (returned + 1, returned + 2)
    # The dead writer's shard is merged and removed.
    assert not os.path.exists(e.root + ".shards") or not os.listdir(e.root + ".shards")


@pytest.mark.parallel_only
def test_mpi_ranks_append_concurrently(engine, comm):
    ps = PlacementSet.require(engine, "cells")
    rank, size = comm.Get_rank(), comm.Get_size()
    for i in range(20):
        ps.append_data((i % 3, rank, 0), np.full((i % 4 + 1, 3), rank * 1000 + i))
    comm.Barrier()
    pos = ps.load_positions()
    assert len(pos) == size * sum(i % 4 + 1 for i in range(20))
    for r in range(size):
        assert sorted(set(pos[pos[:, 0] // 1000 == r][:, 0].astype(int) % 1000)) == list(
            range(20)
        )
    comm.Barrier()


@pytest.mark.parallel_only
def test_mpi_collectives_agree_and_errors_reach_every_rank(engine, comm, shared_dir):
    from bsb_store.exceptions import StoreExistsError

    PlacementSet.require(engine, "a")  # every rank at once: idempotent
    assert PlacementSet.list(engine) == ["a"]
    other = shared_dir / "other.h5"
    if comm.Get_rank() == 0:
        other.write_bytes(b"x")
    comm.Barrier()
    with pytest.raises(StoreExistsError):
        engine.copy(other)  # fails on rank 0: every rank raises, nobody hangs
    engine.move(shared_dir / "moved.h5")
    assert engine.exists() and engine.root.endswith("moved.h5")
    stats = engine.get_chunk_stats()
    assert comm.allgather(list(stats)) == [list(stats)] * comm.Get_size()
    engine.remove()
    assert not engine.exists()
    engine.create()
    assert engine.exists()
