"""Faults that are not crashes: a root lock held past the timeout, a full disk, an I/O
error under HDF5 (issue 13, items 1 and 5). Whatever happens, a call that returned is
never lost, a call that raises changes nothing, and the interpreter never crashes.

The disk-full tests mount a small tmpfs, so they need root; they are skipped otherwise.
Every scenario whose failure used to crash the interpreter (SIGSEGV in h5py's
``File.close``) runs in a subprocess, so that a crash fails the test instead of
killing pytest.
"""

from __future__ import annotations

import glob
import hashlib
import os
import subprocess
import sys
import textwrap
import uuid

import numpy as np
import pytest

from bsb_store.core import HDF5Engine, PlacementSet
from bsb_store.core.maintenance import check
from bsb_store.exceptions import (
    DiskFullError,
    LockTimeoutError,
    ShardLostError,
    StoreError,
)

from ..core.workers import check_calls, rows

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))


def run_python(code: str, env: dict[str, str] | None = None, timeout: float = 60):
    """Run ``code`` in a fresh interpreter (the tests' package importable)."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        env={**os.environ, **(env or {})},
    )


def hold_lock(root: str, seconds: float = 30) -> subprocess.Popen:
    """A process holding the exclusive root lock of ``root`` (a long merge elsewhere,
    a stopped process)."""
    code = f"""
        import portalocker, time
        fh = open({root + ".lock"!r}, "a+b")
        portalocker.lock(fh, portalocker.LockFlags.EXCLUSIVE)
        print("locked", flush=True)
        time.sleep({seconds})
    """
    p = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)], stdout=subprocess.PIPE, text=True
    )
    assert p.stdout.readline().strip() == "locked"
    return p


def release(holder: subprocess.Popen) -> None:
    holder.kill()
    holder.wait()


def shards(root: str) -> list[str]:
    return sorted(glob.glob(os.path.join(root + ".shards", "*.h5")))


def sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def assert_all_calls(root: str, worker: int, n: int) -> None:
    """The store holds every one of the ``n`` calls of ``worker``, whole, once; the
    shard that held them is merged and gone, and ``check`` finds nothing."""
    e = HDF5Engine(root)
    positions = PlacementSet(e, "cells").load_positions()
    assert check_calls(positions, worker) == list(range(n))
    assert len(positions) == sum(i % 4 + 1 for i in range(n))
    e.close()
    assert shards(root) == []
    report = check(root)
    assert not report.findings, report.findings


def new_store(root) -> HDF5Engine:
    e = HDF5Engine(root)
    e.create()
    PlacementSet.create(e, "cells")
    return e


# ------------------------------------------------------------------ item 1: close
@pytest.mark.serial_only
def test_close_keeps_unmerged_appends_when_the_root_lock_times_out(tmp_path, monkeypatch):
    """Was: close() swallowed the LockTimeoutError of its merge, deleted the shard and
    returned; the store held 0 cells and passed check."""
    e = new_store(tmp_path / "store.h5")
    ps = PlacementSet(e, "cells")
    for i in range(10):
        ps.append_data((i % 3, 0, 0), rows(1, i))
    shard = e._st.writer.path
    holder = hold_lock(e.root)
    try:
        monkeypatch.setattr(e._st.lock, "timeout", 0.5)
        with pytest.raises(LockTimeoutError) as info:
            e.close()
    finally:
        release(holder)
    message = str(info.value)
    assert isinstance(info.value, StoreError)
    assert e.root in message and shard in message
    assert f"bsb-store repair {e.root}" in message
    assert info.value.details["shard"] == shard
    assert shards(e.root) == [shard]  # kept, with every returned call
    assert_all_calls(e.root, 1, 10)  # the next open merges it


@pytest.mark.serial_only
def test_exit_keeps_unmerged_appends_and_says_so(tmp_path):
    """Was: the exit handler merged, failed silently and deleted the shard."""
    e = new_store(tmp_path / "store.h5")
    e.close()
    code = f"""
        import sys
        from bsb_store.core import HDF5Engine, PlacementSet
        from tests.core.workers import rows
        ps = PlacementSet(HDF5Engine({e.root!r}), "cells")
        for i in range(10):
            ps.append_data((i % 3, 0, 0), rows(2, i))
        print("appended", flush=True)
        sys.stdin.readline()  # exit once the root lock is taken
    """
    writer = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env={**os.environ, "BSB_STORE_LOCK_TIMEOUT": "0.5"},
    )
    assert writer.stdout.readline().strip() == "appended"
    holder = hold_lock(e.root)
    try:
        stdout, stderr = writer.communicate("go\n", timeout=30)
    finally:
        release(holder)
    out = subprocess.CompletedProcess(writer.args, writer.returncode, stdout, stderr)
    assert out.returncode == 0, out.stderr
    [shard] = shards(e.root)
    assert "bsb-store" in out.stderr and shard in out.stderr, out.stderr
    assert f"bsb-store repair {e.root}" in out.stderr
    assert "Traceback" not in out.stderr
    assert_all_calls(e.root, 2, 10)


# ------------------------------------------------------------------ disk full
def _mount_tmpfs(path: str, size: str) -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs to fill needs root")
    os.makedirs(path)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", path],
        capture_output=True,
        text=True,
    )
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")


@pytest.fixture
def small_disk(tmp_path):
    """A 24 MiB file system of its own (tmpfs), unmounted after the test."""
    path = str(tmp_path / f"disk-{uuid.uuid4().hex[:6]}")
    _mount_tmpfs(path, "24m")
    yield path
    from bsb_store.core.engine import _STATES

    for key in [k for k in _STATES if k[0].startswith(path + os.sep)]:
        st = _STATES.pop(key)  # no descriptor may stay open on the mount
        if st.writer is not None:
            st.writer.close()
        st.close_handle()
        st.lock.close()
    if subprocess.run(["umount", path], capture_output=True).returncode:
        subprocess.run(["umount", "-l", path], capture_output=True)


FILL = """
def fill(directory, leave):
    # Leave about `leave` bytes free on the file system of `directory`.
    st = os.statvfs(directory)
    n = st.f_bavail * st.f_frsize - leave
    with open(os.path.join(directory, "filler"), "wb") as f:
        while n > 0:
            f.write(bytes(min(n, 1 << 20)))
            n -= 1 << 20
"""

#: 16 calls of 20000 x 3 float64 rows: 7.3 MiB of pending data in a shard.
BIG_CALLS, BIG_ROWS = 16, 20000


def big_rows(i: int) -> np.ndarray:
    return np.column_stack(
        [np.full(BIG_ROWS, 3.0), np.full(BIG_ROWS, float(i)), np.arange(BIG_ROWS)]
    )


def write_pending(root: str) -> None:
    """A writer that appends BIG_CALLS calls and dies (os._exit): its shard holds
    them, unmerged."""
    out = run_python(
        f"""
        import os
        from bsb_store.core import HDF5Engine, PlacementSet
        from tests.reliability.test_faults import big_rows
        ps = PlacementSet(HDF5Engine({root!r}), "cells")
        for i in range({BIG_CALLS}):
            ps.append_data((i % 4, 0, 0), big_rows(i))
        os._exit(0)
        """
    )
    assert out.returncode == 0, out.stderr


def assert_big_calls(root: str) -> None:
    e = HDF5Engine(root)
    positions = PlacementSet(e, "cells").load_positions()
    e.close()
    assert len(positions) == BIG_CALLS * BIG_ROWS
    for i in range(BIG_CALLS):
        got = positions[positions[:, 1] == i]
        assert np.array_equal(got, big_rows(i)), f"call {i} is not whole"
    assert shards(root) == []


READ = (
    FILL
    + """
import errno, os
from bsb_store.core import HDF5Engine, PlacementSet
from bsb_store.exceptions import DiskFullError
def report(call):
    try:
        call()
        print("no error")
    except DiskFullError as e:
        print("DiskFullError", isinstance(e, OSError), e.errno == errno.ENOSPC)
        print(str(e).replace(chr(10), " "))
"""
)


@pytest.mark.serial_only
def test_a_merge_that_does_not_fit_raises_disk_full_before_writing(small_disk):
    """Was: the reader merging pending data into a nearly full disk died with SIGSEGV
    in h5py's File.close."""
    root = os.path.join(small_disk, "store.h5")
    new_store(root).close()
    write_pending(root)
    [shard] = shards(root)
    before = sha256(root)
    out = run_python(
        READ
        + f"""
fill({small_disk!r}, 3 << 20)
report(lambda: len(PlacementSet(HDF5Engine({root!r}), "cells")))
"""
    )
    assert out.returncode == 0, f"the reader crashed ({out.returncode}):\n{out.stderr}"
    lines = out.stdout.splitlines()
    assert lines[0] == "DiskFullError True True", out.stdout + out.stderr
    assert root in lines[1] and "MiB needed" in lines[1] and small_disk in lines[1]
    assert "Traceback" not in out.stderr
    assert sha256(root) == before  # refused before writing anything
    assert shards(root) == [shard] and not os.path.exists(root + ".undo")
    os.unlink(os.path.join(small_disk, "filler"))
    assert_big_calls(root)  # space is back: the next read merges everything


@pytest.mark.serial_only
def test_close_on_a_full_disk_raises_and_keeps_the_shard(small_disk):
    """Item 1 on ENOSPC: close() used to drop the shard whatever its merge did."""
    root = os.path.join(small_disk, "store.h5")
    new_store(root).close()
    out = run_python(
        READ
        + f"""
from tests.reliability.test_faults import big_rows
e = HDF5Engine({root!r})
ps = PlacementSet(e, "cells")
for i in range({BIG_CALLS}):
    ps.append_data((i % 4, 0, 0), big_rows(i))
print(e._st.writer.path)
fill({small_disk!r}, 3 << 20)
report(e.close)
"""
    )
    assert out.returncode == 0, f"the writer crashed ({out.returncode}):\n{out.stderr}"
    shard, kind, message = out.stdout.splitlines()[:3]
    assert kind == "DiskFullError True True", out.stdout + out.stderr
    assert shard in message and f"bsb-store repair {root}" in message
    assert shards(root) == [shard]
    os.unlink(os.path.join(small_disk, "filler"))
    assert_big_calls(root)


@pytest.mark.serial_only
def test_a_full_disk_the_estimate_missed_is_a_disk_full_error(small_disk):
    """With the free-space check fooled (space taken by another process meanwhile),
    HDF5 runs out in the middle of the merge. Was: SIGSEGV; the session must be
    undone and the error be a DiskFullError naming the root and the operation."""
    root = os.path.join(small_disk, "store.h5")
    new_store(root).close()
    write_pending(root)
    before = sha256(root)
    out = run_python(
        READ
        + f"""
from bsb_store.core.writes import undo
undo.free_space = lambda path: 1 << 50  # the check sees plenty of space
fill({small_disk!r}, 2 << 20)
report(lambda: len(PlacementSet(HDF5Engine({root!r}), "cells")))
"""
    )
    assert out.returncode == 0, f"the reader crashed ({out.returncode}):\n{out.stderr}"
    kind, message = out.stdout.splitlines()[:2]
    assert kind == "DiskFullError True True", out.stdout + out.stderr
    assert root in message and "merging" in message and "rolled back" in message
    assert "Exception ignored" not in out.stderr and "Traceback" not in out.stderr
    assert sha256(root) == before and not os.path.exists(root + ".undo")
    assert len(shards(root)) == 1
    os.unlink(os.path.join(small_disk, "filler"))
    assert_big_calls(root)


# ------------------------------------------------------------- I/O errors under HDF5
@pytest.mark.serial_only
@pytest.mark.parametrize(
    "code, error", [("ENOSPC", "DiskFullError"), ("EIO", "StoreIOError")]
)
@pytest.mark.parametrize("operation", ["merge", "file store"])
def test_an_io_error_under_hdf5_is_a_store_error_and_changes_nothing(
    tmp_path, code, error, operation
):
    """Every byte a write session writes goes through ``undo._pwrite``; make it fail
    after a few writes. Was: a raw ``RuntimeError: Unable to synchronously flush file``
    (or a crash); must be a StoreIOError naming the root and the operation, with the
    root unchanged and the pending data kept."""
    e = new_store(tmp_path / "store.h5")
    e.files.store("x" * 1000, id="before")
    e.close()
    write_pending(e.root)
    before = sha256(e.root)
    call = (
        'len(PlacementSet(e, "cells"))'
        if operation == "merge"
        else 'e.files.store("y" * 100000, id="new")'
    )
    if operation == "file store":  # merge first: then the store's session fails
        assert_big_calls(e.root)
        before = sha256(e.root)
    out = run_python(
        f"""
        import errno, os, sys
        from bsb_store.core import HDF5Engine, PlacementSet
        from bsb_store.core.writes import undo
        from bsb_store.exceptions import StoreError, StoreIOError
        real, count = undo._pwrite, [0]
        def failing(fd, data, offset):
            count[0] += 1
            # Overwriting pages back (the rollback) needs no new space; only the
            # session's own writes fail.
            if count[0] > 3 and sys._getframe(1).f_code.co_name != "rollback":
                raise OSError(errno.{code}, os.strerror(errno.{code}))
            real(fd, data, offset)
        undo._pwrite = failing
        e = HDF5Engine({e.root!r})
        try:
            {call}
            print("no error")
        except StoreIOError as err:
            print(type(err).__name__, isinstance(err, OSError), err.errno)
            print(str(err).replace(chr(10), " "))
        """
    )
    assert out.returncode == 0, f"crashed ({out.returncode}):\n{out.stderr}"
    lines = out.stdout.splitlines()
    kind, message = lines[0], lines[1]
    expected_errno = "28" if code == "ENOSPC" else "None"
    assert kind == f"{error} True {expected_errno}", out.stdout + out.stderr
    assert e.root in message and "rolled back" in message
    assert ("merging" if operation == "merge" else "FileStore.store") in message
    assert "Traceback" not in out.stderr and "Exception ignored" not in out.stderr
    assert sha256(e.root) == before and not os.path.exists(e.root + ".undo")
    if operation == "merge":
        assert len(shards(e.root)) == 1
        assert_big_calls(e.root)
    else:
        assert HDF5Engine(e.root).files.load("before")[0] == "x" * 1000
        assert not HDF5Engine(e.root).files.has("new")


def test_disk_full_error_is_a_store_error_and_an_enospc_oserror():
    import errno
    import pickle

    from bsb_store import exceptions

    err = DiskFullError("no room", path="/x.h5", needed=3)
    assert isinstance(err, StoreError) and isinstance(err, OSError)
    assert err.errno == errno.ENOSPC
    again = pickle.loads(pickle.dumps(err))  # collective() sends errors to every rank
    assert again.errno == errno.ENOSPC and again.details == err.details
    assert "DiskFullError" in exceptions.__all__ and "StoreIOError" in exceptions.__all__


# --------------------------------------------------- item 4: removals behind a writer
def _calls(root: str, worker: int) -> list[int]:
    e = HDF5Engine(root)
    try:
        return check_calls(PlacementSet(e, "cells").load_positions(), worker)
    finally:
        e.close()


@pytest.mark.serial_only
def test_an_append_after_another_process_moved_the_store_raises(tmp_path):
    """Was: another process's ``engine.move`` took the store away (merging what this
    writer had committed), and this writer's next 10 appends returned into a shard
    nothing would ever merge: lost."""
    e = new_store(tmp_path / "store.h5")
    ps = PlacementSet(e, "cells")
    for i in range(5):
        ps.append_data((0, 0, 0), rows(4, i))
    moved = str(tmp_path / "moved.h5")
    out = run_python(
        f"from bsb_store.core import HDF5Engine\nHDF5Engine({e.root!r}).move({moved!r})"
    )
    assert out.returncode == 0, out.stderr
    for i in range(5, 8):
        with pytest.raises(ShardLostError) as info:
            ps.append_data((0, 0, 0), rows(4, i))
        assert e.root in str(info.value) and "was not stored" in str(info.value)
    e.close()
    assert _calls(moved, 4) == list(range(5))  # what returned is in the moved store
    assert not os.path.exists(e.root)


@pytest.mark.serial_only
def test_an_append_after_the_shards_folder_was_deleted_raises_and_keeps_the_rest(
    tmp_path,
):
    """Was: ``rm -rf ROOT.shards`` behind a live writer lost its 40 returned calls,
    its own next read returned 0 rows, and its next appends returned (lost too)."""
    import shutil

    e = new_store(tmp_path / "store.h5")
    ps = PlacementSet(e, "cells")
    for i in range(40):
        ps.append_data((i % 3, 0, 0), rows(5, i))
    shutil.rmtree(e.root + ".shards")
    with pytest.raises(ShardLostError) as info:
        ps.append_data((0, 0, 0), rows(5, 40))
    assert "was removed or replaced" in str(info.value)
    # The calls that returned are still in the open shard: the next read merges them.
    assert len(ps) == sum(i % 4 + 1 for i in range(40))
    e.close()
    assert _calls(e.root, 5) == list(range(40))
    assert not check(e.root).errors


@pytest.mark.serial_only
def test_an_append_after_the_root_was_replaced_by_another_file_raises(tmp_path):
    """A root replaced behind the writer by another store (``cp other.h5 ROOT``) must
    not take this writer's appends; one rewritten by ``compact`` (the same store) must."""
    from bsb_store.core.maintenance import compact

    e = new_store(tmp_path / "store.h5")
    ps = PlacementSet(e, "cells")
    ps.append_data((0, 0, 0), rows(6, 0))
    compact(e.root)  # same store, new inode: appends go on
    ps.append_data((0, 0, 0), rows(6, 1))
    other = new_store(tmp_path / "other.h5")
    other.close()
    os.replace(other.root, e.root)
    with pytest.raises(ShardLostError, match="replaced by another file"):
        ps.append_data((0, 0, 0), rows(6, 2))


# ------------------------------------------- item 2: silent zeros after a full disk
def mid_rows(i: int) -> np.ndarray:
    """Call ``i``'s rows: 4000 x 3 float64 (94 KiB), none of them zero."""
    n = 4000
    return np.column_stack([np.full(n, 8.0), np.full(n, i + 1.0), np.arange(1.0, n + 1)])


@pytest.mark.serial_only
@pytest.mark.parametrize("more", [10, 0])
def test_appends_after_a_full_disk_cleared_are_whole(small_disk, more):
    """Was: appends hit ENOSPC, space came back, the same process appended 10 more
    calls that all returned, and some read back as zeros or partial rows while
    ``check`` said OK. A shard that failed a write takes no more appends; with no
    more appends, ``close()`` merges what it committed."""
    root = os.path.join(small_disk, "store.h5")
    new_store(root).close()
    out = run_python(
        FILL
        + f"""
import os
from bsb_store.core import HDF5Engine, PlacementSet
from tests.reliability.test_faults import mid_rows
e = HDF5Engine({root!r})
ps = PlacementSet(e, "cells")
ps.append_data((0, 0, 0), mid_rows(0))
fill({small_disk!r}, 1 << 20)
returned, errors, i = [0], [], 1
while len(errors) < 3 and i < 200:
    try:
        ps.append_data((i % 4, 0, 0), mid_rows(i))
        returned.append(i)
    except Exception as err:
        errors.append(type(err).__name__)
    i += 1
os.unlink(os.path.join({small_disk!r}, "filler"))  # space comes back
for j in range(i, i + {more}):
    ps.append_data((j % 4, 0, 0), mid_rows(j))
    returned.append(j)
print(" ".join(errors))
print(" ".join(map(str, returned)))
e.close()
"""
    )
    assert out.returncode == 0, f"the writer crashed ({out.returncode}):\n{out.stderr}"
    errors, returned = out.stdout.splitlines()[:2]
    returned = [int(x) for x in returned.split()]
    assert shards(root) == []  # close() merged every shard, the failed one too
    e = HDF5Engine(root)
    positions = PlacementSet(e, "cells").load_positions()
    e.close()
    calls = sorted(set(positions[:, 1].astype(int) - 1))
    assert set(returned) <= set(calls)  # every returned call is there ...
    for i in calls:  # ... whole (a call that raised may be there, whole, too)
        got = positions[positions[:, 1] == i + 1]
        assert np.array_equal(got, mid_rows(i)), f"call {i} is not whole"
    assert shards(root) == []
    assert not check(root).findings
    # The appends that failed said why, as a StoreError (was: a raw RuntimeError).
    assert errors.split() and set(errors.split()) <= {"DiskFullError"}, out.stdout


def dead_writer(root: str, worker: int, n: int) -> str:
    """A writer that appends ``n`` calls and dies; its shard's path."""
    out = run_python(
        f"""
        import os
        from bsb_store.core import HDF5Engine, PlacementSet
        from tests.core.workers import rows
        ps = PlacementSet(HDF5Engine({root!r}), "cells")
        for i in range({n}):
            ps.append_data((i % 3, 0, 0), rows({worker}, i))
        os._exit(0)
        """
    )
    assert out.returncode == 0, out.stderr
    [shard] = shards(root)
    return shard


@pytest.mark.serial_only
def test_a_record_torn_on_disk_is_never_merged(tmp_path):
    """Committed rows zeroed on disk after their call returned (a torn write, a flush
    behind a hole): was merged as zeros, and ``check`` said OK. Every record has a
    checksum: the merge raises and keeps the shard, ``check`` reports an error and
    ``repair`` refuses."""
    import h5py

    from bsb_store.core.maintenance import repair
    from bsb_store.exceptions import ShardChecksumError

    e = new_store(tmp_path / "store.h5")
    e.close()
    shard = dead_writer(e.root, 7, 6)
    with h5py.File(shard, "r+") as f:
        [data] = [d for d in f["s"].values() if d.shape[1:] == (3,)]  # positions
        data[2:4] = 0  # zeroed behind the writer's back
    before = sha256(e.root)
    with pytest.raises(ShardChecksumError, match="does not match its checksum") as info:
        len(PlacementSet(HDF5Engine(e.root), "cells"))
    assert shard in str(info.value)
    assert sha256(e.root) == before and shards(e.root) == [shard]
    report = check(e.root)
    assert [f.code for f in report.errors] == ["shard-checksum"], report.findings
    fixed = repair(e.root)
    assert fixed.refused and "checksum" in fixed.refused and shards(e.root) == [shard]
    assert sha256(e.root) == before


@pytest.mark.serial_only
def test_a_shard_of_format_1_without_checksums_is_still_merged(tmp_path):
    """A dead writer's shard of the previous format (six log columns, no checksum)
    left by bsb-store before this change is merged as before."""
    import h5py

    e = new_store(tmp_path / "store.h5")
    e.close()
    shard = dead_writer(e.root, 8, 6)
    with h5py.File(shard, "r+") as f:  # rewrite it as format 1 wrote it
        log = f["log"][()]
        del f["log"]
        f["log"] = log[:, :6]
        f.attrs["bsb_store_shard"] = 1
    assert {f.code for f in check(e.root).errors} == {"pending-dead"}  # no checksum
    assert _calls(e.root, 8) == list(range(6))
    assert shards(e.root) == []


# ------------------------------------------------- item 3: copies that miss data
@pytest.mark.serial_only
def test_a_copy_without_sidecars_of_a_store_with_a_live_writer_says_so(tmp_path):
    """Was: ``cp network.h5 copy.h5`` beside a live writer gave a copy with none of its
    pending calls, and ``check copy.h5`` printed OK."""
    import shutil
    import warnings

    from bsb_store.core.maintenance import info
    from bsb_store.exceptions import MissingShardsWarning

    e = new_store(tmp_path / "store.h5")
    ps = PlacementSet(e, "cells")
    for i in range(5):
        ps.append_data((0, 0, 0), rows(9, i))
    copy = str(tmp_path / "copy.h5")
    shutil.copyfile(e.root, copy)
    report = check(copy)
    assert not report.ok
    [f] = [f for f in report.errors if f.code == "missing-shards"]
    assert "copied or moved without its sidecars: 1 writers' data is not in it" in (
        f.message
    )
    assert "bsb-store compact" in f.message and "HDF5Engine.copy" in f.message
    assert info(copy)["pending"]["missing_writers"] == 1
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        len(PlacementSet(HDF5Engine(copy), "cells"))
    assert any(issubclass(w.category, MissingShardsWarning) for w in caught)
    # The store itself is fine, and the copies made the supported ways too.
    assert not check(e.root).errors
    e.copy(tmp_path / "engine-copy.h5")
    assert not check(str(tmp_path / "engine-copy.h5")).findings
    assert _calls(str(tmp_path / "engine-copy.h5"), 9) == list(range(5))
    e.close()
    assert not check(e.root).findings  # the merge at close unregistered the shard


@pytest.mark.serial_only
def test_a_copy_after_a_kill_says_so_and_check_names_the_repair(tmp_path):
    """After a SIGKILL, ``check`` reports the dead writer's unmerged calls as an error
    with the ``repair`` hint (docs/cli.rst; was: "OK with 1 warning"), and a plain
    copy of the root says that writer's data is not in it."""
    import shutil

    from bsb_store.core.maintenance import compact, repair

    e = new_store(tmp_path / "store.h5")
    e.close()
    dead_writer(e.root, 10, 4)
    report = check(e.root)
    assert [f.code for f in report.errors] == ["pending-dead"]
    assert "bsb-store repair" in report.errors[0].message
    copy = str(tmp_path / "copy.h5")
    shutil.copyfile(e.root, copy)
    assert "missing-shards" in {f.code for f in check(copy).errors}
    out = str(tmp_path / "compacted.h5")
    compact(e.root, out)  # merges first: a complete copy
    assert not check(out).findings and _calls(out, 10) == list(range(4))
    assert repair(e.root).ok and not check(e.root).findings
    assert _calls(e.root, 10) == list(range(4))
