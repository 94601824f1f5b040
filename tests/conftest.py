"""Shared fixtures: a communicator (MPI.COMM_WORLD under mpiexec, else serial), store
paths that every rank agrees on, and a fresh engine per test."""

from __future__ import annotations

import os
import tempfile

import pytest


def _world():
    if (
        not os.environ.get("BSB_STORE_TEST_MPI")
        and "PMI_RANK" not in os.environ
        and "OMPI_COMM_WORLD_RANK" not in os.environ
    ):
        return None
    try:
        from mpi4py import MPI
    except ImportError:
        return None
    return MPI.COMM_WORLD if MPI.COMM_WORLD.Get_size() > 1 else None


WORLD = _world()
RANK = 0 if WORLD is None else WORLD.Get_rank()
SIZE = 1 if WORLD is None else WORLD.Get_size()


def pytest_configure(config):
    config.addinivalue_line("markers", "serial_only: skipped under mpiexec")
    config.addinivalue_line("markers", "parallel_only: needs mpiexec -n 2 or more")
    if WORLD is not None and not config.option.basetemp:
        # Each rank gets its own pytest temp root; shared paths come from `shared_dir`.
        config.option.basetemp = os.path.join(
            tempfile.gettempdir(), f"bsb-store-tests-{os.getppid()}-rank{RANK}"
        )


def pytest_collection_modifyitems(config, items):
    for item in items:
        if WORLD is not None and item.get_closest_marker("serial_only"):
            item.add_marker(pytest.mark.skip(reason="serial only"))
        if WORLD is None and item.get_closest_marker("parallel_only"):
            item.add_marker(pytest.mark.skip(reason="needs mpiexec -n 2"))


@pytest.fixture
def comm():
    """MPI.COMM_WORLD under mpiexec, None (serial) otherwise."""
    return WORLD


@pytest.fixture
def shared_dir(tmp_path):
    """A directory every rank sees (rank 0's tmp_path, broadcast)."""
    if WORLD is None:
        return tmp_path
    path = WORLD.bcast(str(tmp_path) if RANK == 0 else None, root=0)
    return __import__("pathlib").Path(path)


@pytest.fixture
def engine(shared_dir, comm):
    """A freshly created store shared by every rank."""
    from bsb_store.core import HDF5Engine

    e = HDF5Engine(shared_dir / "store.h5", comm)
    e.create()
    yield e
    e.close()
