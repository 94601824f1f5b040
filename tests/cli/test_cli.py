"""The ``bsb-store`` command line: output, ``--json`` and exit codes of check, repair,
info and compact, run through ``main([...])`` and once as ``python -m bsb_store``."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from bsb_store.cli import EXIT_FAILED, EXIT_OK, EXIT_PROBLEMS, EXIT_USAGE, main
from bsb_store.cli.progress import make_progress, quiet
from bsb_store.core import HDF5Engine
from tests.core.test_maintenance import (
    _journal,
    dead_writer_store,
    h5,
    make_store,
    sha,
)

pytestmark = pytest.mark.serial_only


@pytest.fixture
def root(tmp_path) -> str:
    return make_store(tmp_path / "s.h5")


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def run_json(capsys, *argv: str) -> tuple[int, dict]:
    code, out, _ = run(capsys, *argv, "--json")
    return code, json.loads(out)


def damage_missing_dataset(root: str) -> None:
    with h5(root, "r+") as f:
        del f["placement/cells/chunks/0/position"]


# -------------------------------------------------------------------------- check
def test_check_ok(capsys, root):
    code, out, err = run(capsys, "check", root)
    assert code == EXIT_OK == 0
    assert out.splitlines()[0] == f"OK: {root}"
    assert "1 placement set (8 cells in 2 chunks)" in out
    assert "1 connectivity set (2 connections)" in out
    assert "1 morphology, 1 file; no pending shard data" in out
    assert err == ""


def test_check_json_ok(capsys, root):
    code, data = run_json(capsys, "check", root)
    assert code == 0 and data["ok"] is True
    assert data["errors"] == [] and data["warnings"] == []
    assert data["summary"]["placement"]["cells"] == {"cells": 8, "chunks": 2}


def test_check_reports_errors_with_exit_1(capsys, root):
    damage_missing_dataset(root)
    code, out, _ = run(capsys, "check", root)
    assert code == EXIT_PROBLEMS == 1
    assert out.startswith(f"FAILED: 1 error, 0 warnings in {root}")
    assert "[missing-dataset] placement/cells/chunks/0/position:" in out
    assert "5 rows are lost" in out
    code, data = run_json(capsys, "check", root)
    assert code == 1 and data["ok"] is False
    assert [e["code"] for e in data["errors"]] == ["missing-dataset"]
    assert data["errors"][0]["repairable"] is False


def test_check_lists_warnings_separately_and_exits_0(capsys, root):
    with h5(root, "r+") as f:
        f.create_group("store/staging/x")
    code, out, _ = run(capsys, "check", root)
    assert code == 0
    assert out.startswith(f"OK with 1 warning: {root}")
    assert "Errors:" not in out
    assert "Warnings:\n  - [staging] store/staging: 1 staged objects" in out


def test_killed_writer_store_fails_check_with_the_repair_hint(capsys, tmp_path):
    # docs/cli.rst: a dead writer's unmerged calls are an error (the root file alone
    # lacks them; a copy of it would miss them), fixed by `repair` (or the next open).
    root, shard = dead_writer_store(tmp_path)
    code, out, _ = run(capsys, "check", root)
    assert code == 1
    assert out.startswith("FAILED: 1 error, 1 warning in")
    assert f"[pending-dead] {shard}: 3 committed append calls" in out
    assert "bsb-store repair" in out


@pytest.mark.parametrize("kind", ["zero-byte", "foreign", "truncated", "missing"])
def test_not_a_store_exits_2(capsys, tmp_path, kind):
    path = tmp_path / "x.h5"
    if kind == "zero-byte":
        path.write_bytes(b"")
    elif kind == "foreign":
        with h5py.File(path, "w") as f:
            f["a"] = np.arange(2)
    elif kind == "truncated":
        path.write_bytes(Path(make_store(tmp_path / "g.h5")).read_bytes()[:3000])
    expected = "No store at" if kind == "missing" else "is not a bsb-store file"
    for command in ("check", "repair", "info", "ls", "compact"):
        code, out, err = run(capsys, command, str(path))
        assert code == EXIT_USAGE == 2, command
        assert err.startswith(f"bsb-store {command}: error: ") and expected in err
        assert out == ""
    code, data = run_json(capsys, "check", str(path))
    assert code == 2 and data["ok"] is False and data["exit_code"] == 2
    assert expected in data["error"]


# ------------------------------------------------------------------------- repair
def test_repair_redoes_a_journal_then_is_a_no_op(capsys, root):
    _journal(root)
    # An interrupted journal is a repairable warning (was bug journal-is-error).
    code, out, _ = run(capsys, "check", root)
    assert code == 0 and "journal" in out
    code, out, _ = run(capsys, "repair", root)
    assert code == 0
    assert out.splitlines() == [
        f"Repaired {root}:",
        "  - redid an interrupted transaction (2 journaled operations)",
        "The store now passes `bsb-store check`.",
    ]
    assert run(capsys, "check", root)[0] == 0
    before = sha(root)
    code, out, _ = run(capsys, "repair", root)
    assert code == 0 and out == f"Nothing to repair in {root}.\n"
    assert sha(root) == before


def test_repair_merges_a_dead_writers_shard(capsys, tmp_path):
    root, shard = dead_writer_store(tmp_path)
    code, data = run_json(capsys, "repair", root)
    assert code == 0 and data["ok"] and data["changed"]
    assert any("merged 3 calls" in a for a in data["actions"])
    assert any("removed the merged shard" in a for a in data["actions"])
    assert not os.path.exists(shard)
    with h5(root) as f:
        assert f["placement/cells/index/count"][()].tolist() == [11, 3]
    code, data = run_json(capsys, "repair", root)
    assert code == 0 and data["changed"] is False and data["actions"] == []


def test_repair_says_what_it_cannot_fix(capsys, root):
    damage_missing_dataset(root)
    code, out, _ = run(capsys, "repair", root)
    assert code == 1
    assert out.startswith(f"Nothing to repair in {root}.\n1 error remain")
    assert "[missing-dataset]" in out


# --------------------------------------------------------------------------- info
def test_info_text(capsys, root):
    code, out, _ = run(capsys, "info", root)
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == root
    engine = HDF5Engine(root)
    storage_id = engine.storage_id
    engine.close()
    assert f"  storage id    {storage_id}" in lines
    assert "  chunk size    unset" in lines
    assert (
        "    cells: 8 cells in 2 chunks; columns: position, morphology, labels; "
        "2 morphology names" in lines
    )
    assert "    cells_to_cells (cells -> cells): 2 connections in 1 block" in lines
    assert "  morphologies  1 (4 points): m" in lines
    assert "  files         1 (5 B)" in lines
    assert "  pending       none" in lines
    assert not any("interrupted" in line for line in lines)
    _journal(root)
    code, out, _ = run(capsys, "info", root)
    assert "  transaction   interrupted: run `bsb-store repair`" in out.splitlines()


def test_info_json(capsys, root):
    code, data = run_json(capsys, "info", root)
    assert code == 0
    assert data["placement"]["cells"]["cells"] == 8
    assert data["connectivity"]["cells_to_cells"]["blocks"] == 1
    assert data["sizes"]["file_bytes"] == os.path.getsize(root)
    assert data["provenance"]["written_by"] == "bsb_store.core.engine.HDF5Engine"
    assert data["interrupted_transaction"] is False
    assert data["interrupted_session"] is False


# ------------------------------------------------------------------------ compact
def test_compact_reports_sizes(capsys, root):
    with h5(root, "r+") as f:
        ds = f["placement/cells/chunks/0/position"]
        ds.resize(50_005, axis=0)
        ds[5:] = 2.0
    before = os.path.getsize(root)
    code, data = run_json(capsys, "compact", root)
    assert code == 0 and data["refused"] is None
    assert data["bytes_before"] == before
    assert data["bytes_after"] == os.path.getsize(root) < before - 1_000_000
    code, out, _ = run(capsys, "check", root)
    assert code == 0 and "Warnings" not in out
    # Compacted already: a second rewrite would not be smaller, so OUT gets the bytes.
    code, out, _ = run(capsys, "compact", root, str(Path(root).with_name("o.h5")))
    assert code == 0 and out.startswith(f"Not rewritten: a compacted {root} would not")
    assert os.path.getsize(Path(root).with_name("o.h5")) == os.path.getsize(root)


def test_compact_refuses_errors_and_existing_output(capsys, root, tmp_path):
    other = tmp_path / "exists.h5"
    other.write_bytes(b"x")
    code, _, err = run(capsys, "compact", root, str(other))
    assert code == 2 and "it exists" in err
    damage_missing_dataset(root)
    code, out, _ = run(capsys, "compact", root)
    assert code == 1
    assert out.startswith("Not compacted: the store has errors; run `bsb-store repair`")


# -------------------------------------------------------------------- usage, locks
@pytest.mark.parametrize(
    "argv", [[], ["check"], ["bogus", "x.h5"], ["check", "x.h5", "--nope"]]
)
def test_usage_errors_exit_2(capsys, argv):
    code, _, err = run(capsys, *argv)
    assert code == 2 and "usage: bsb-store" in err


def test_help_and_version_exit_0(capsys):
    code, out, _ = run(capsys, "--version")
    assert code == 0 and out.strip() == "bsb-store 0.1.0"
    code, out, _ = run(capsys, "check", "--help")
    assert code == 0 and "label-set ids" in out


def test_lock_timeout_exits_3(capsys, root):
    import portalocker

    HDF5Engine(root)._st.lock.timeout = 0.2
    with open(root + ".lock", "r+b") as fh:
        portalocker.lock(fh, portalocker.LockFlags.EXCLUSIVE)
        code, _, err = run(capsys, "check", root)
        portalocker.unlock(fh)
    assert code == EXIT_FAILED == 3
    assert "Could not take the shared lock" in err


# --------------------------------------------------------------------- subprocess
def test_python_m_bsb_store(root, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}

    def cli(*argv: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "bsb_store", *argv],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )

    ok = cli("check", root, "--json")
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["summary"]["connectivity"]["cells_to_cells"] == {
        "connections": 2,
        "blocks": 1,
    }
    damage_missing_dataset(root)
    bad = cli("check", root)
    assert bad.returncode == 1 and "[missing-dataset]" in bad.stdout
    empty = tmp_path / "empty.h5"
    empty.write_bytes(b"")
    refused = cli("repair", str(empty))
    assert refused.returncode == 2 and "is not a bsb-store file" in refused.stderr


# ----------------------------------------------------------------------- progress
def test_progress_is_quiet_off_a_terminal():
    assert make_progress(False) is quiet
    assert make_progress(None, io.StringIO()) is quiet  # not a TTY
    items = [1, 2, 3]
    assert quiet(items, "x", 3) is items


def test_progress_bar_with_tqdm():
    pytest.importorskip("tqdm")
    stream = io.StringIO()
    bar = make_progress(True, stream)
    assert bar is not quiet
    assert list(bar(range(5), "chunks", 5)) == [0, 1, 2, 3, 4]
    assert "chunks" in stream.getvalue()


# ------------------------------------------------------- interrupted write session
def _dead_session(root: str) -> bytes:
    """Cut a write session the way SIGKILL would: pages changed, no commit."""
    from bsb_store.core.writes.undo import UndoFile

    with open(root, "rb") as f:
        before = f.read()
    session = UndoFile(root)
    with h5py.File(session, "r+") as f:
        del f["placement/cells"]
        f.attrs["half"] = "written"
    session.close()
    return before


def test_check_info_and_repair_of_an_interrupted_session(capsys, root):
    before = _dead_session(root)
    code, report = run_json(capsys, "check", root)
    assert code == EXIT_OK and report["ok"]
    assert [w["code"] for w in report["warnings"]] == ["interrupted-session"]
    assert report["summary"]["placement"]["cells"]["cells"] == 8  # as rolled back
    code, data = run_json(capsys, "info", root)
    assert data["interrupted_session"] is True and "cells" in data["placement"]
    code, out, _ = run(capsys, "info", root)
    assert "rolled back at the next open" in out
    code, out, _ = run(capsys, "repair", root)
    assert code == EXIT_OK
    assert "rolled back the unfinished write session of a dead writer" in out
    assert not os.path.exists(root + ".undo")
    with open(root, "rb") as f:
        assert f.read() == before
