"""Shared by the reliability tests."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True, scope="module")
def _release_lock_files():
    """These tests touch hundreds of roots. The engine keeps each root's lock file open
    for the life of the process, even after ``close()`` (known bug fd-leak, pinned in
    test_concurrent.py), so release them after every module."""
    yield
    from bsb_store.core.engine import _STATES

    for state in list(_STATES.values()):
        if state.writer is not None:
            state.writer.close()
        state.close_handle()
        state.lock.close()
