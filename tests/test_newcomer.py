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


# -------------------------- item 11: what append and create check (bsb-hdf5's way)
def test_a_position_outside_its_chunk_is_stored_in_the_named_chunk(tmp_path):
    """As bsb-hdf5: the chunk a call names is where the cells belong; positions are
    not checked against its box (documented in docs/quickstart.rst)."""
    import numpy as np

    from bsb_store import Chunk, HDF5Engine, PlacementSet

    e = HDF5Engine(tmp_path / "s.h5")
    e.create()
    ps = PlacementSet.create(e, "a")
    ps.append_data(Chunk((0, 0, 0), 100), np.array([[500.0, 500, 500], [1, 2, 3]]))
    assert ps.get_chunk_stats() == {"0": 2}
    with ps.chunk_context([Chunk((0, 0, 0), 100)]):
        assert ps.load_positions().tolist() == [[500.0, 500, 500], [1, 2, 3]]
    with ps.chunk_context([Chunk((5, 5, 5), 100)]):  # where the position lies: nothing
        assert len(ps) == 0


def test_bsb_hdf5_baseline_for_chunks_and_parent_directories(tmp_path):
    """The baseline the two decisions above follow, checked on bsb-hdf5 itself."""
    np = pytest.importorskip("numpy")
    pytest.importorskip("bsb_hdf5")
    from bsb import Chunk, Configuration, Scaffold, Storage

    from bsb_store.exceptions import StoreNotFoundError

    with pytest.raises(FileNotFoundError):
        Storage("hdf5", str(tmp_path / "missing" / "net.h5"))
    with pytest.raises(StoreNotFoundError):
        Storage("store", str(tmp_path / "missing" / "net.h5"))
    assert not (tmp_path / "missing").exists()

    for engine in ("hdf5", "store"):
        cfg = Configuration.default(
            storage={"engine": engine, "root": str(tmp_path / f"{engine}.h5")},
            cell_types={"a": {"spatial": {"radius": 1, "count": 1}}},
        )
        ps = Scaffold(cfg).get_placement_set("a")
        ps.append_data(Chunk((0, 0, 0), (100, 100, 100)), np.array([[500.0, 500, 500]]))
        assert ps.load_positions().tolist() == [[500.0, 500, 500]]
        assert ps.get_chunk_stats() == {"0": 1}


# ------------------------------------------- item 2: every documented install line
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.rst"))]
_INSTALL = re.compile(
    r'pip install (?P<e>-e )?"?\.(?:\[(?P<extras>[\w,]*)\])?"?(?=[\s`]|$)'
)


def documented_install_lines() -> dict[tuple[bool, tuple[str, ...]], list[str]]:
    """``(editable, extras) -> [files]`` for every ``pip install [-e] ".[...]"`` of the
    checkout in the README and the docs."""
    found: dict[tuple[bool, tuple[str, ...]], list[str]] = {}
    for path in DOCS:
        for m in _INSTALL.finditer(path.read_text()):
            extras = tuple(sorted(filter(None, (m["extras"] or "").split(","))))
            found.setdefault((bool(m["e"]), extras), []).append(path.name)
    return found


def test_the_install_lines_are_found():
    lines = documented_install_lines()
    assert (False, ()) in lines and (False, ("bsb",)) in lines  # docs/quickstart.rst
    assert (True, ("bsb", "mpi")) in lines  # README.md


def _check_script(extras: tuple[str, ...]) -> str:
    code = ["import bsb_store"]
    if "mpi" in extras or "bsb" in extras:
        code.append("from mpi4py import MPI; MPI.Get_library_version()")
    if "bsb" in extras:
        code.append("import bsb, bsb_store.plugin")
        code.append(
            "from bsb.storage import get_engines; assert 'store' in get_engines()"
        )
    return "; ".join(code)


def _install_order(lines) -> list[tuple[bool, tuple[str, ...], bool]]:
    """``(editable, extras, reset_first)``: the lines without BSB first, then by
    number of extras. A line goes on top of the previous one only when its extras
    include all of the previous one's (then nothing it lacks can come from an earlier
    line); otherwise the venv is emptied first. So the heavy BSB tree is installed
    once, and ``.[bsb]`` never sees the MPICH wheel of ``.[mpi]``."""
    keys = sorted(lines, key=lambda k: ("bsb" in k[1], len(k[1]), k[1], k[0]))
    order, installed = [], None
    for editable, extras in keys:
        reset = installed is not None and not set(installed) <= set(extras)
        order.append((editable, extras, reset))
        installed = extras
    return order


def test_install_order_never_leans_on_an_earlier_line():
    lines = {(False, ()): 0, (False, ("mpi",)): 0, (False, ("bsb",)): 0}
    lines |= {(True, ("bsb", "mpi")): 0, (True, ("bench", "bsb", "mpi")): 0}
    assert _install_order(lines) == [
        (False, (), False),
        (False, ("mpi",), False),
        (False, ("bsb",), True),
        (True, ("bsb", "mpi"), False),
        (True, ("bench", "bsb", "mpi"), False),
    ]


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_every_documented_install_line_works_in_a_fresh_venv(tmp_path):
    """Each documented line installed into one fresh venv (no system site packages),
    in the order of :func:`_install_order` (emptied whenever a line could otherwise
    lean on an earlier one), then imported: the lines with the ``bsb`` extra must give
    a BSB that imports (mpi4py loading an MPI library) and finds the plugin. Needs PyPI
    (or a pip cache); ~3 minutes. ``pytest -m "not slow"`` skips it offline."""
    import venv

    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True, system_site_packages=False).create(env_dir)
    py = str(env_dir / "bin" / "python")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL"))}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"

    def run(*args: str, timeout: float = 900) -> subprocess.CompletedProcess:
        return subprocess.run(
            [py, *args],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
            timeout=timeout,
        )

    keep = {"pip", "setuptools", "wheel"}
    lines = documented_install_lines()
    for editable, extras, reset in _install_order(lines):
        if reset:
            listed = run("-m", "pip", "list", "--format=freeze").stdout.split()
            names = [n.split("==")[0] for n in listed]
            names = [n for n in names if n.lower() not in keep]
            done = run("-m", "pip", "uninstall", "-y", "-q", *names)
            assert done.returncode == 0, done.stderr
        spec = f"{REPO}[{','.join(extras)}]" if extras else str(REPO)
        where = lines[editable, extras]
        line = f"pip install {'-e ' if editable else ''}{spec!r} (from {where})"
        # --no-compile: no .pyc up front (what is installed is the same), for time.
        flags = ["-q", "--no-compile", *(["-e"] if editable else [])]
        done = run("-m", "pip", "install", *flags, spec)
        assert done.returncode == 0, f"{line}:\n{done.stderr[-3000:]}"
        done = run("-c", _check_script(extras), timeout=300)
        assert done.returncode == 0, f"{line}, then import:\n{done.stderr[-3000:]}"


# ------------------------------------------------ item 7: the README tour, twice
def _readme_block(heading: str, lang: str) -> str:
    text = (REPO / "README.md").read_text()
    section = text[text.index(heading) :]
    return re.search(rf"```{lang}\n(.*?)```", section, re.S).group(1)


_TOUR_CHECK = """
with granule.chunk_context([(1, 0, 0)]):
    assert granule.load_ids().tolist() == list(range(500, 800))
assert len(granule) == 800 and granule.get_labelled(["edge"]).tolist() == [0, 1, 2]
assert len(cs) == 3 and content == '{"a": 1}'
print("tour ok")
"""


def test_the_readme_tour_runs_twice_and_stays_true(tmp_path):
    tour = _readme_block("## A short tour", "python")
    assert "engine.create()" in tour and "# 500..799" in tour
    for _ in range(2):  # a new process each time, as a user running it again
        done = subprocess.run(
            [sys.executable, "-c", tour + _TOUR_CHECK],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip().endswith("tour ok")


def test_the_standalone_example_runs_twice(tmp_path):
    script = str(REPO / "examples" / "standalone.py")
    outs = []
    for _ in range(2):
        done = subprocess.run(
            [sys.executable, script, str(tmp_path / "ex.h5")],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr
        outs.append(re.sub(r"storage_id=\S+", "", done.stdout))
    assert outs[0] == outs[1] and re.search(r"granule_cell +1000 cells", outs[0])


# ------------------------------- item 8: `bsb compile examples/network.yaml`
def test_bsb_compile_of_the_example_from_the_repository_layout(tmp_path):
    """BSB resolves the configuration's file paths (examples/neuron.swc, the root
    network.h5) against the working directory: the README says to run it from the
    repository root. A copy of that layout stands in for the root here."""
    pytest.importorskip("bsb")
    import shutil

    from bsb_store.core import HDF5Engine

    bsb = Path(sys.executable).with_name("bsb")
    if not bsb.exists():
        pytest.skip("no bsb command next to this python")
    shutil.copytree(REPO / "examples", tmp_path / "examples")
    env = {**os.environ, "UCX_LOG_LEVEL": "error", "MPIR_CVAR_CH4_NETMOD": "ofi"}
    done = subprocess.run(
        [str(bsb), "compile", "examples/network.yaml"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert HDF5Engine.recognizes(tmp_path / "network.h5")
    assert "from the repository root" in (REPO / "README.md").read_text()
