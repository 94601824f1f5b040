"""Helpers shared by test modules (fixtures stay in conftest.py)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from .conftest import RANK, WORLD


@contextlib.contextmanager
def scratch_cwd(tmp_path_factory, name: str) -> Iterator[str]:
    """Work in a scratch directory, rank 0's and shared with the other ranks: bsb
    writes files in the working directory (default roots such as
    ``scaffold_network_*.h5``), and no test may leave files in the checkout."""
    scratch = str(tmp_path_factory.mktemp(name)) if RANK == 0 else None
    if WORLD is not None:
        scratch = WORLD.bcast(scratch, root=0)
    previous = os.getcwd()
    os.chdir(scratch)
    try:
        yield scratch
    finally:
        os.chdir(previous)
