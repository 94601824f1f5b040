"""What a new user meets first (issue 17): the lint CI runs, the documented install
lines, the README's tour, the examples, and the command line's manners."""

from __future__ import annotations

import configparser
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.serial_only


# ------------------------------------------------------------------------ lint
def _lint_lines(text: str) -> list[str]:
    tools = ("ruff ", "lint-imports")
    return [ln.strip() for ln in text.splitlines() if ln.strip().startswith(tools)]


def test_scripts_test_and_tox_run_the_same_lint():
    tox = configparser.ConfigParser(interpolation=None)
    tox.read(REPO / "tox.ini")
    from_tox = _lint_lines(tox["testenv:lint"]["commands"])
    from_script = _lint_lines((REPO / "scripts/test").read_text())
    assert from_tox == ["ruff check .", "ruff format --check .", "lint-imports"]
    assert from_script == from_tox
    # Tox takes the tools from the `dev` extra, where ruff is pinned exactly.
    assert tox["testenv:lint"]["extras"].split() == ["dev"]
    pyproject = (REPO / "pyproject.toml").read_text()
    dev = re.search(r"^dev = \[(.*)\]$", pyproject, re.M).group(1)
    assert re.search(r'"ruff==[\d.]+"', dev)
    assert re.search(r'"import-linter>=[\d.]+,<\d+"', dev)
    workflow = (REPO / ".github/workflows/ci.yml").read_text()
    assert "tox -e lint" in workflow


# ------------------------------------------------------- item 9: a closed pipe
@pytest.mark.parametrize("json_flag", [[], ["--json"]])
def test_closed_pipe_exits_quietly(tmp_path, json_flag):
    """`bsb-store info ROOT | head -3`: the reader leaving early is no error. The read
    end is closed before the command writes, so every run meets the closed pipe."""
    from tests.core.test_maintenance import make_store

    root = make_store(tmp_path / "s.h5")
    cmd = [sys.executable, "-m", "bsb_store.cli", "info", root, "--no-progress"]
    proc = subprocess.Popen(
        cmd + json_flag, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO
    )
    proc.stdout.close()
    err = proc.stderr.read().decode()
    proc.stderr.close()
    assert proc.wait(timeout=120) == 141  # 128 + SIGPIPE, as `cat` in `cat f | head`
    assert err == ""


def test_pipe_read_to_the_end_is_unchanged(tmp_path):
    from tests.core.test_maintenance import make_store

    root = make_store(tmp_path / "s.h5")
    cmd = [sys.executable, "-m", "bsb_store.cli", "info", root, "--no-progress"]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout and done.stderr == ""


# ------------------------------------------------- item 5: compact never grows
def _tightly_grown_store(path: Path) -> str:
    """Many small chunks merged in place: HDF5 lays this out more tightly than a
    fresh copy of it (a rewrite is ~4% larger), the shape of the example network."""
    import numpy as np

    from bsb_store import Chunk, HDF5Engine, PlacementSet

    e = HDF5Engine(path)
    e.create()
    rng = np.random.default_rng(0)
    for s in range(3):
        ps = PlacementSet.require(e, f"t{s}")
        for k in range(17):
            ps.append_data(
                Chunk((k, 0, 0), 100), rng.random((6, 3)) * 100 + [k * 100, 0, 0]
            )
    e.files.store_active_config({"name": "x"})
    e.close()
    return str(path)


def _digest(path) -> str:
    import hashlib

    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def test_compact_never_makes_a_file_bigger(tmp_path):
    import h5py

    from bsb_store.core import HDF5Engine, PlacementSet
    from bsb_store.core.maintenance import _compact, check, compact

    root = _tightly_grown_store(tmp_path / "s.h5")
    # The premise: a plain rewrite of this store is bigger than the store.
    with h5py.File(root, "r") as src, h5py.File(tmp_path / "rewrite.h5", "w") as dst:
        _compact._copy_live(src, dst, _compact._quiet)
    size = os.path.getsize(root)
    assert os.path.getsize(tmp_path / "rewrite.h5") > size

    digest = _digest(root)
    report = compact(root)
    assert report.refused is None and report.kept
    assert report.bytes_after == report.bytes_before == size == os.path.getsize(root)
    assert _digest(root) == digest  # untouched
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]

    out = tmp_path / "out.h5"
    report = compact(root, out)
    assert report.kept and os.path.getsize(out) == size
    assert check(out).ok
    assert len(PlacementSet(HDF5Engine(out), "t1")) == 17 * 6


def test_compact_cli_says_the_file_was_kept(tmp_path):
    root = _tightly_grown_store(tmp_path / "s.h5")
    cmd = [sys.executable, "-m", "bsb_store.cli", "compact", root, "--no-progress"]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"Not rewritten: a compacted {root} would not be")
    assert "saved -" not in done.stdout
