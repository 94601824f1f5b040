"""Worker processes for the concurrency and crash tests (run as scripts).

``python workers.py append ROOT WORKER N``: append N calls to set "cells", call i
putting ``i % 4 + 1`` rows into chunk ``(i % 3, 0, 0)``; every row is
``[worker, i, row]`` so a reader can tell exactly which calls are stored, and whole.
After each call returns, the worker prints ``i`` (flushed): the parent knows which
calls returned.
"""

from __future__ import annotations

import sys

import numpy as np


def rows(worker: int, i: int) -> np.ndarray:
    n = i % 4 + 1
    return np.column_stack([np.full(n, worker), np.full(n, i), np.arange(n)]).astype(
        float
    )


def append(root: str, worker: int, n: int, connect: bool = False) -> None:
    from bsb_store.core import HDF5Engine, PlacementSet

    engine = HDF5Engine(root)
    ps = PlacementSet(engine, "cells")
    for i in range(n):
        ps.append_data((i % 3, 0, 0), rows(worker, i))
        print(i, flush=True)
    engine.close()


def check_calls(positions: np.ndarray, worker: int) -> list[int]:
    """The call indices of ``worker`` found in ``positions``; each must be whole."""
    mine = positions[positions[:, 0] == worker]
    calls = sorted(set(mine[:, 1].astype(int)))
    for i in calls:
        got = mine[mine[:, 1] == i]
        assert len(got) == i % 4 + 1, f"call {i} of worker {worker} is partial: {got}"
        assert got[:, 2].tolist() == list(range(i % 4 + 1))
    return calls


if __name__ == "__main__":
    cmd, root, worker, n = sys.argv[1:5]
    if cmd == "append":
        append(root, int(worker), int(n))
