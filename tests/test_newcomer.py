"""What a new user meets first (issue 17): the lint CI runs, the documented install
lines, the README's tour, the examples, and the command line's manners."""

from __future__ import annotations

import configparser
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
