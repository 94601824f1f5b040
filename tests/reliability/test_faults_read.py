"""Reading must work wherever the bytes can be read, and the tools never crash on
damaged files (issue 13, items 6 to 9).

* A finished store on a read-only mount, in a directory the user cannot write, or
  created by another user is read (``check``, ``info`` and the engine); writes there
  raise a :class:`ReadOnlyError` naming the store at once.
* ``flock`` that fails (ENOLCK, ENOSYS) is said at once, with the settings that apply,
  never waited out as contention.
* ``check``, ``info``, ``repair`` and ``compact`` on damaged copies of a store (flipped
  bytes, truncations) report what they cannot read and exit with a documented code,
  never a traceback; ``repair`` never makes a store worse.
* Invalid file ids are refused naming the rule they break.

The read-only mount and the other-user tests need root (they are skipped otherwise).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import portalocker
import pytest

from bsb_store.cli import EXIT_FAILED, EXIT_OK, EXIT_PROBLEMS, EXIT_USAGE, main
from bsb_store.core import HDF5Engine, PlacementSet, maintenance
from bsb_store.core.engine import _STATES
from bsb_store.exceptions import InvalidInputError, LockingError, ReadOnlyError

from ..core.test_maintenance import POS0, make_store

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
needs_root = pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() != 0,
    reason="needs root (bind mounts, and setuid to another user)",
)
pytestmark = pytest.mark.serial_only


def sha(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def forget(path: str) -> None:
    """Drop this process's state of ``path`` (its lock file descriptor)."""
    for key in [k for k in _STATES if k[0] == path]:
        st = _STATES.pop(key)
        st.close_handle()
        st.lock.close()


def cli(*argv: str) -> tuple[int, str, str]:
    """``bsb-store`` in-process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([*argv, "--no-progress"])
    return code, out.getvalue(), err.getvalue()


def reads_and_refuses_writes(root: str) -> dict[str, object]:
    """Read the store of make_store at ``root`` and try every kind of write; what
    happened, as plain data (also sent back from another user's process)."""
    out: dict[str, object] = {}
    e = HDF5Engine(root)
    ps = PlacementSet(e, "cells")
    out["cells"] = len(ps)
    out["positions"] = ps.load_positions().shape[0]
    out["file"] = e.files.load("f1")[0]
    out["check"] = cli("check", root)[0]
    out["info"] = cli("info", root)[0]
    writes = {
        "create-set": lambda: PlacementSet.create(e, "new"),
        "append": lambda: ps.append_data((0, 0, 0), POS0),
        "store-file": lambda: e.files.store("x", id="y"),
    }
    for name, write in writes.items():
        try:
            write()
        except ReadOnlyError as err:
            out[name] = f"ReadOnlyError: {err}"
        except Exception as err:
            out[name] = f"{type(err).__name__}: {err}"
        else:
            out[name] = "no error"
    e.close()
    return out


def assert_read_only_outcome(out: dict[str, object], root: str) -> None:
    assert out["cells"] == 8 and out["positions"] == 8, out
    assert out["file"] in ("hello", b"hello"), out
    assert out["check"] == EXIT_OK and out["info"] == EXIT_OK, out
    for name in ("create-set", "append", "store-file"):
        text = str(out[name])
        assert text.startswith("ReadOnlyError: "), (name, text)
        assert root in text and "Reads work" in text, (name, text)


# ------------------------------------------------------------------ 6. read-only
@pytest.fixture
def ro_mount(tmp_path):
    """A store in ``src`` and a read-only bind mount of ``src`` at ``mnt``."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        pytest.skip("needs root to bind-mount a directory read-only")
    src, mnt = tmp_path / "src", tmp_path / "mnt"
    src.mkdir()
    mnt.mkdir()
    make_store(src / "s.h5")
    forget(str(src / "s.h5"))
    mounted = False

    def mount() -> None:
        nonlocal mounted
        r = subprocess.run(["mount", "--bind", str(src), str(mnt)], capture_output=True)
        if r.returncode:
            pytest.skip(f"cannot bind-mount here: {r.stderr.decode().strip()}")
        mounted = True
        r = subprocess.run(
            ["mount", "-o", "remount,ro,bind", str(mnt)], capture_output=True
        )
        if r.returncode:
            pytest.skip(f"cannot remount read-only: {r.stderr.decode().strip()}")

    yield src, mnt, mount
    forget(str(mnt / "s.h5"))
    if mounted:
        subprocess.run(["umount", str(mnt)], check=True)


@pytest.mark.parametrize("lock_file", ["with-lock-file", "without-lock-file"])
def test_read_only_mount_reads_and_refuses_writes(ro_mount, lock_file):
    """Item 6: EROFS on ``<root>.lock`` used to fail every read, ``check`` and
    ``info`` included. An existing lock file is opened read-only (readers still exclude
    writers); with none, nothing can write there, so reads take no lock."""
    src, mnt, mount = ro_mount
    if lock_file == "without-lock-file":
        os.unlink(src / "s.h5.lock")
    mount()
    root = str(mnt / "s.h5")
    before = sorted(os.listdir(mnt)), sha(root)
    out = reads_and_refuses_writes(root)
    assert_read_only_outcome(out, root)
    assert "Read-only file system" in str(out["append"])
    code, stdout, err = cli("repair", root)
    assert code == EXIT_OK and "Nothing to repair" in stdout, (stdout, err)
    code, _, err = cli("compact", root)
    assert code == EXIT_FAILED and "read-only" in err and root in err, err
    assert (sorted(os.listdir(mnt)), sha(root)) == before


def _as_nobody(fn, *args) -> dict[str, object]:
    """``fn(*args)`` in a forked child running as uid/gid 65534 (nobody); its JSON
    result. Forked rather than exec'd: the interpreter may live where nobody cannot
    read, and every module the child needs is imported already."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 0
        try:
            os.close(r)
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            data = json.dumps(fn(*args), default=str)
        except BaseException as e:
            data, code = json.dumps({"child-error": f"{type(e).__name__}: {e}"}), 1
        with contextlib.suppress(BaseException):
            os.write(w, data.encode())
        os._exit(code)
    os.close(w)
    chunks = []
    while chunk := os.read(r, 65536):
        chunks.append(chunk)
    os.close(r)
    os.waitpid(pid, 0)
    return json.loads(b"".join(chunks) or b'{"child-error": "no output"}')


@pytest.fixture
def shared_dir():
    """A directory everyone may traverse (pytest's tmp_path is private to root)."""
    d = tempfile.mkdtemp(prefix="bsb-store-other-user-", dir="/tmp")
    os.chmod(d, 0o755)
    yield Path(d)
    shutil.rmtree(d, ignore_errors=True)


@needs_root
def test_another_users_store_reads_and_refuses_writes(shared_dir):
    """Item 6: a store made by another user (umask 022: directory 755, files 644) is
    read through its lock file opened read-only; writes raise ReadOnlyError."""
    warm = shared_dir / "warm"
    warm.mkdir()
    reads_and_refuses_writes(make_store(warm / "s.h5"))  # imports all the child needs
    d = shared_dir / "d"
    d.mkdir()
    os.chmod(d, 0o755)
    root = make_store(d / "s.h5")
    forget(root)
    for p in os.listdir(d):
        os.chmod(d / p, 0o644)
    before = sorted(os.listdir(d)), sha(root)
    out = _as_nobody(reads_and_refuses_writes, root)
    assert "child-error" not in out, out
    assert_read_only_outcome(out, root)
    assert (sorted(os.listdir(d)), sha(root)) == before


@needs_root
def test_unwritable_directory_without_lock_file(shared_dir):
    """Item 6: no lock file and a directory nobody may write (555): reads take no lock.
    Where others may write the directory, reading without a lock file is refused with
    a clear LockingError instead (a writer could be at work)."""
    warm = shared_dir / "warm"
    warm.mkdir()
    reads_and_refuses_writes(make_store(warm / "s.h5"))
    d = shared_dir / "ro"
    d.mkdir()
    root = make_store(d / "s.h5")
    forget(root)
    os.unlink(d / "s.h5.lock")
    os.chmod(root, 0o644)
    os.chmod(d, 0o555)
    out = _as_nobody(reads_and_refuses_writes, root)
    assert "child-error" not in out, out
    assert_read_only_outcome(out, root)
    assert os.listdir(d) == ["s.h5"]

    os.chmod(d, 0o775)  # its owner (root) may write: a writer may come

    def refused(path: str) -> dict[str, object]:
        try:
            len(PlacementSet(HDF5Engine(path), "cells"))
        except LockingError as e:
            return {"error": str(e)}
        return {"error": None}

    out = _as_nobody(refused, root)
    assert out["error"] and "BSB_STORE_LOCKING=none" in out["error"], out
    assert os.listdir(d) == ["s.h5"]


# ---------------------------------------------------------------- 7. no flock
def _no_flock(code: int):
    def lock(fh, flags):
        err = OSError(code, os.strerror(code))
        raise portalocker.exceptions.LockException(err, str(err), fh=fh) from err

    return lock


@pytest.mark.parametrize("code", [errno.ENOLCK, errno.ENOSYS])
def test_flock_that_fails_is_said_at_once(tmp_path, monkeypatch, code):
    """Item 7: ``flock()`` failing with ENOLCK/ENOSYS used to be retried for the whole
    lock timeout and then reported as "another process holds it"."""
    root = make_store(tmp_path / "s.h5")
    forget(root)
    monkeypatch.setattr(portalocker, "lock", _no_flock(code))
    e = HDF5Engine(root)
    e._st.lock.timeout = 3.0
    t0 = time.monotonic()
    with pytest.raises(LockingError) as info:
        len(PlacementSet(e, "cells"))
    assert time.monotonic() - t0 < 1.0
    text = str(info.value)
    assert errno.errorcode[code] in text and "flock" in text
    assert "BSB_STORE_LOCKING=none" in text and "MPI" in text
    assert "another process holds it" not in text
    assert info.value.errno == code and isinstance(info.value, OSError)
    t0 = time.monotonic()
    status, _, err = cli("check", root)
    assert status == EXIT_FAILED and "BSB_STORE_LOCKING=none" in err
    assert time.monotonic() - t0 < 5.0
    forget(root)
    # The setting that applies works there: no flock taken at all.
    assert len(PlacementSet(HDF5Engine(root, locking="none"), "cells")) == 8
    forget(root)


SHIM = r"""
#include <errno.h>
int flock(int fd, int operation) { (void)fd; (void)operation; errno = ENOLCK; return -1; }
"""


def test_flock_enolck_shim_in_a_real_process(tmp_path):
    """Item 7, end to end: an LD_PRELOAD shim makes every flock() fail with ENOLCK, as
    on NFS without lockd; ``bsb-store check`` says so at once (exit 3)."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler to build the flock shim")
    src, lib = tmp_path / "shim.c", tmp_path / "libnoflock.so"
    src.write_text(SHIM)
    subprocess.run([cc, "-shared", "-fPIC", "-o", str(lib), str(src)], check=True)
    root = make_store(tmp_path / "s.h5")
    forget(root)
    env = {
        **os.environ,
        "LD_PRELOAD": str(lib),
        "BSB_STORE_LOCK_TIMEOUT": "10",
        "PYTHONPATH": REPO,
    }
    t0 = time.monotonic()
    r = subprocess.run(
        [sys.executable, "-m", "bsb_store", "check", root],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert time.monotonic() - t0 < 8.0, r.stderr
    assert r.returncode == EXIT_FAILED, (r.stdout, r.stderr)
    assert "ENOLCK" in r.stderr and "BSB_STORE_LOCKING=none" in r.stderr
    assert "Traceback" not in r.stderr
    r = subprocess.run(
        [sys.executable, "-m", "bsb_store", "check", root, "--locking", "none"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert r.returncode == EXIT_OK, (r.stdout, r.stderr)


# -------------------------------------------------------------- 8. damaged files
DOCUMENTED = {EXIT_OK, EXIT_PROBLEMS, EXIT_USAGE, EXIT_FAILED}


def _damage(data: bytes, rng: random.Random) -> tuple[str, bytes]:
    b = bytearray(data)
    if rng.random() < 0.7:
        for _ in range(rng.randint(1, 20)):
            b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
        return "flipped", bytes(b)
    return "truncated", bytes(b[: rng.randrange(len(b))])


def _findings(root: str) -> set[tuple[str, str, str]] | None:
    try:
        report = maintenance.check(root)
    except Exception:
        return None
    return {(f.severity, f.code, f.path) for f in report.findings}


def test_tools_never_crash_on_damaged_copies(tmp_path):
    """Item 8: of seeded damaged copies (flipped bytes, truncations) of a finished
    store, check/info/repair/compact used to end in a Python traceback on about one in
    five (exit 1, like "errors found"). Now every HDF5 error is a ``damaged`` finding,
    exit codes are the documented ones (a damaged file is never "could not run"), and
    repair never makes a store worse."""
    (tmp_path / "base").mkdir()
    base = make_store(tmp_path / "base" / "s.h5")
    forget(base)
    data = Path(base).read_bytes()
    rng = random.Random(20261203)
    seen: dict[str, set[int]] = {c: set() for c in ("check", "info", "repair", "compact")}
    damaged = 0
    for i in range(60):
        kind, blob = _damage(data, rng)
        root = tmp_path / f"c{i}" / "s.h5"
        root.parent.mkdir()
        root.write_bytes(blob)
        root = str(root)
        before = _findings(root)
        for command in ("check", "info"):
            code, out, err = cli(command, root)
            assert code in DOCUMENTED - {EXIT_FAILED}, (i, kind, command, err)
            assert "unexpected" not in err and "Traceback" not in err, (i, command, err)
            seen[command].add(code)
            damaged += "damaged: " in out
        digest = sha(root)
        code, out, err = cli("repair", root)
        assert code in DOCUMENTED - {EXIT_FAILED}, (i, kind, "repair", err)
        assert "unexpected" not in err, (i, "repair", err)
        seen["repair"].add(code)
        after = _findings(root)
        # Repair never makes a store worse: unchanged, or fewer findings.
        assert sha(root) == digest or (
            before is not None and after is not None and after <= before
        ), (i, kind, before, after)
        code, out, err = cli("compact", root, str(tmp_path / f"c{i}" / "out.h5"))
        assert code in DOCUMENTED - {EXIT_FAILED}, (i, kind, "compact", err)
        assert "unexpected" not in err, (i, "compact", err)
        seen["compact"].add(code)
        forget(root)
    assert damaged, "no copy was reported damaged: the damage missed the metadata"
    assert EXIT_PROBLEMS in seen["check"] and EXIT_USAGE in seen["check"], seen


def _hanging_heap(path: str) -> None:
    """Turn the first object header of the file's first global heap collection into
    index 0, size 0: HDF5 (up to 2.0 at least) then loops forever decoding it."""
    data = bytearray(Path(path).read_bytes())
    at = data.find(b"GCOL")
    assert at >= 0
    obj = at + 16
    data[obj : obj + 2] = b"\0\0"  # index
    data[obj + 8 : obj + 16] = b"\0" * 8  # size
    Path(path).write_bytes(bytes(data))


def test_a_global_heap_that_would_hang_hdf5_is_a_finding(tmp_path):
    """Item 8: a flipped byte in a global heap collection made ``check``, ``info``,
    ``repair`` and ``compact`` spin forever inside HDF5. They now report it."""
    root = make_store(tmp_path / "s.h5")
    forget(root)
    _hanging_heap(root)
    digest = sha(root)
    code = textwrap.dedent(
        f"""
        import sys
        from bsb_store.cli import main
        codes = [main([c, {root!r}, "--no-progress"]) for c in
                 ("check", "info", "repair", "compact")]
        print("CODES", codes)
        """
    )
    r = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": REPO},
        timeout=60,
    )
    assert "CODES [1, 1, 1, 1]" in r.stdout, (r.stdout, r.stderr)
    assert "damaged: " in r.stdout and "global heap" in r.stdout
    assert sha(root) == digest


# ------------------------------------------------------------------ 9. file ids
@pytest.mark.parametrize(
    "bad, rule",
    [
        (".", "reserved"),
        ("..", "reserved"),
        ("a\0b", "NUL character"),
        ("a/b", "contains '/'"),
        ("", "non-empty"),
    ],
)
def test_file_id_errors_name_the_rule_broken(tmp_path, bad, rule):
    """Item 9: '.', '..' and 'a\\0b' were refused as "expected a non-empty string
    without '/'", a rule they keep."""
    e = HDF5Engine(tmp_path / "s.h5")
    e.create()
    with pytest.raises(InvalidInputError) as info:
        e.files.store("x", id=bad)
    text = str(info.value)
    assert rule in text, text
    if bad in (".", "..", "a\0b"):
        assert "without '/'" not in text
    assert not e.files.all()
    e.close()
