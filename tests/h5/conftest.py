"""Fixtures of the h5 tests: copies of the TVB fixture files and file snapshots."""

from __future__ import annotations

import hashlib
import importlib.util
import shutil
from collections.abc import Callable
from pathlib import Path

import h5py
import pytest

TVB_DATA = Path(__file__).parent.parent / "data" / "tvb"


def _load_generator():
    """The fixture generator script, loaded from its path (tests/data is no package)."""
    spec = importlib.util.spec_from_file_location(
        "tvb_fixture_generator", TVB_DATA / "make_files.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


#: Constants (gids ...) the TVB fixtures were written with.
fixtures = _load_generator()


def digest(path: Path) -> str:
    """SHA-256 of a file's bytes (``"absent"`` if it does not exist)."""
    if not path.exists():
        return "absent"
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def tvb_file(tmp_path: Path) -> Callable[[str], Path]:
    """Copy a fixture from tests/data/tvb into tmp_path (tests never touch originals)."""

    def copy(pattern: str) -> Path:
        matches = sorted(TVB_DATA.glob(pattern))
        assert len(matches) == 1, f"{pattern!r} matches {matches}"
        return Path(shutil.copy(matches[0], tmp_path / matches[0].name))

    return copy


@pytest.fixture
def unchanged() -> Callable[[Path], Callable[[], None]]:
    """``check = unchanged(path)``; later ``check()`` asserts the bytes are identical."""

    def snapshot(path: Path) -> Callable[[], None]:
        before = digest(path)

        def check() -> None:
            assert digest(path) == before, f"{path} was modified"

        return check

    return snapshot


@pytest.fixture
def h5path(tmp_path: Path) -> Path:
    return tmp_path / "f.h5"


def attrs_of(path: Path, group: str = "/") -> dict:
    with h5py.File(path, "r") as f:
        return dict(f[group].attrs)
