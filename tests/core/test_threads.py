"""Threads of one process (BSB's serial job pool) appending and reading at once."""

import threading

import numpy as np
import pytest

from bsb_store.core import ConnectivitySet, PlacementSet

pytestmark = pytest.mark.serial_only


def test_threads_append_and_read_concurrently(engine):
    ps = PlacementSet.create(engine, "cells")
    cs = ConnectivitySet.create(engine, "cells", "cells")
    errors = []

    def writer(t):
        try:
            for i in range(30):
                ps.append_data((i % 4, t, 0), np.full((3, 3), t * 100 + i))
                cs.chunk_connect((i % 4, t, 0), (0, 0, 0), [[i, -1, -1]], [[t, -1, -1]])
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    def reader():
        try:
            for _ in range(30):
                n = len(ps)
                assert n % 3 == 0 and len(ps.load_positions()) >= n
                len(cs)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(4)]
    threads += [threading.Thread(target=reader) for _ in range(2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=120)
    assert not errors, errors
    pos = ps.load_positions()
    assert len(pos) == 4 * 30 * 3
    assert sorted(set(pos[:, 0].astype(int))) == sorted(
        t * 100 + i for t in range(4) for i in range(30)
    )
    assert len(cs) == 4 * 30
