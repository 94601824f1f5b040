"""Worker processes of the reliability tests.

Starting a Python process that imports numpy, h5py and bsb-store takes ~0.7 s here, too
slow for hundreds of kills. So the crash tests start one *zygote* (``python workers.py
zygote``) that imports everything once and forks a fresh worker per request; a fork
costs ~10 ms. The zygote never opens an HDF5 file, so every worker starts with a clean
library state. Workers report each call that returned by appending a line to a report
file (``os.write`` on an ``O_APPEND`` descriptor: the line survives the worker's
``SIGKILL``), and exit with ``os._exit`` so that nothing is merged or closed on the way
out; the test kills them with ``SIGKILL``.

The same functions also run as plain scripts (``python workers.py NAME ROOT ...``) for
the tests that want independent interpreters.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import traceback
from typing import Any

import numpy as np

try:
    from . import model as M
except ImportError:  # run as a script
    import model as M  # type: ignore[no-redef]


# ----------------------------------------------------------------------- reporting
class Report:
    """Lines appended to a file, each one write(2) that a SIGKILL cannot tear."""

    def __init__(self, path: str):
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def line(self, text: str) -> None:
        os.write(self.fd, (text + "\n").encode())


def read_report(path: str) -> list[str]:
    try:
        with open(path) as f:
            return f.read().split()
    except FileNotFoundError:
        return []


def _sleep_forever() -> None:
    while True:
        time.sleep(1)


# -------------------------------------------------------------------- crash workers
def execute(engine, ps, cs, op: M.Op) -> None:
    """Run one planned operation through the public API."""
    from bsb_store.core.resources.morphologies import MorphologyData

    kind, i = op["kind"], op["i"]
    if kind == "append":
        ps.append_data(
            M.CHUNKS[op["c"]],
            M.positions(i, op["n"], op["c"]),
            morphologies=op.get("m"),
            additional={"op": np.full(op["n"], float(i))},
        )
    elif kind == "batch":
        with engine.write_scope():
            for j, (c, n) in enumerate(op["parts"]):
                ps.append_data(
                    M.CHUNKS[c],
                    M.positions(i, n, c, j),
                    additional={"op": np.full(n, float(i))},
                )
    elif kind == "cconnect":
        n = op["n"]
        src = np.column_stack([np.full(n, i), np.arange(n), np.zeros(n)])
        dst = np.column_stack([np.arange(n), np.full(n, i), np.ones(n)])
        cs.chunk_connect(
            M.CHUNKS[op["s"]], M.CHUNKS[op["d"]], src.astype(int), dst.astype(int)
        )
    elif kind == "connect":
        k = len(op["src"])
        src = np.column_stack([op["src"], np.full(k, i), np.full(k, -1)])
        dst = np.column_stack([op["dst"], np.full(k, -1), np.arange(k)])
        cs.connect(ps, ps, src, dst)
    elif kind == "label":
        fn = ps.label if op["add"] else ps.remove_labels
        fn(op["labels"], op["cells"])
    elif kind == "file":
        engine.files.store(M.file_content(i, op["size"]), id=op["id"], overwrite=True)
    elif kind == "morph":
        points, radii = M.morphology_arrays(i, op["n"])
        engine.morphologies.save(
            op["name"], MorphologyData(points=points, radii=radii), overwrite=True
        )
    elif kind == "clear":
        ps.clear([M.CHUNKS[op["c"]]])
    elif kind == "read":
        len(ps)
    else:  # pragma: no cover - plans only hold the kinds above
        raise ValueError(kind)


def run_plan(root: str, report: str, seed: int, focus: str, n: int) -> None:
    """Execute ``plan(seed, focus, n)``, reporting ``ready`` and then the index of
    every operation that returned; then wait to be killed."""
    from bsb_store.core import ConnectivitySet, HDF5Engine, PlacementSet

    ops = M.plan(seed, focus, n)
    out = Report(report)
    engine = HDF5Engine(root)
    ps, cs = PlacementSet(engine, M.CELLS), ConnectivitySet(engine, M.CONNS)
    out.line("ready")
    for op in ops:
        execute(engine, ps, cs, op)
        out.line(str(op["i"]))
    out.line("done")
    _sleep_forever()


def feed_rows(writer: int, i: int) -> np.ndarray:
    """Rows of call ``i`` of feeder ``writer``: ``[writer, i, row]``, 1-4 of them."""
    n = i % 4 + 1
    return np.column_stack([np.full(n, writer), np.full(n, i), np.arange(n)]).astype(
        float
    )


def feed_chunk(i: int, chunks: int) -> tuple[int, int, int]:
    return (i % chunks, i // chunks % 3, 0)


def feed(
    root: str,
    report: str,
    writer: int,
    calls: int,
    chunks: int,
    pause: float = 0.0,
    close: bool = False,
    go: str | None = None,
) -> None:
    """Append ``calls`` placement calls and as many connection blocks, reporting each;
    then exit without closing (leaving a dead writer's shard) unless ``close``. With
    ``go``, wait for that file to exist before the first append."""
    from bsb_store.core import ConnectivitySet, HDF5Engine, PlacementSet

    out = Report(report)
    engine = HDF5Engine(root)
    ps, cs = PlacementSet(engine, M.CELLS), ConnectivitySet(engine, M.CONNS)
    out.line("ready")
    while go and not os.path.exists(go):
        time.sleep(0.002)
    for i in range(calls):
        rows = feed_rows(writer, i)
        ps.append_data(feed_chunk(i, chunks), rows)
        locs = rows.astype(int)
        cs.chunk_connect(feed_chunk(i, chunks), (0, 0, 0), locs, locs)
        out.line(str(i))
        if pause:
            time.sleep(pause)
    if close:
        engine.close()
    out.line("done")


def consolidate(root: str, report: str) -> None:
    """Read the store in a loop (every read merges pending shard data first)."""
    from bsb_store.core import ConnectivitySet, HDF5Engine, PlacementSet

    out = Report(report)
    engine = HDF5Engine(root)
    out.line("ready")
    ps = PlacementSet(engine, M.CELLS)  # the first read merges every shard
    cs = ConnectivitySet(engine, M.CONNS)
    for i in range(10**9):
        len(ps), len(cs)
        out.line(str(i))


def die_in_transaction(root: str, report: str, at: str, action: str = "file") -> None:
    """Run ``action`` (``"file"``: overwrite file ``f0``; ``"merge"``: append cells and
    read, which merges them; this process merged once before) in a transaction that
    SIGKILLs its own process at ``at``: ``"staged"`` (data staged, nothing published),
    ``"apply"`` (the first publish operation applied and flushed) or ``"applied"``
    (every publish operation applied, not flushed)."""
    from bsb_store.core import HDF5Engine, PlacementSet
    from bsb_store.core.writes import txn

    real_apply = txn._apply

    def apply(f, ops, payloads):
        if at == "apply":
            real_apply(f, ops[:1], payloads)
            f.flush()
        elif at == "applied":
            real_apply(f, ops, payloads)
        os.kill(os.getpid(), signal.SIGKILL)

    engine = HDF5Engine(root)
    ps = PlacementSet(engine, M.CELLS) if action == "merge" else None
    if ps is not None:  # a first merge records this writer in store/shards/name ...
        ps.append_data((0, 0, 0), M.positions(0, 2, 0))
        len(ps)
        ps.append_data((0, 0, 0), M.positions(1, 3, 0))  # ... the second rewrites it
    txn._apply = apply
    Report(report).line("ready")
    if ps is not None:
        len(ps)
    else:
        engine.files.store("new content", id="f0", overwrite=True)


#: Crash-point scenarios: operations already returned (the store's state), then the
#: operation whose transaction is cut at each write.
CRASH_POINTS: dict[str, tuple[list[M.Op], M.Op]] = {}


def _crash_point_scenarios() -> None:
    base = [
        {"kind": "append", "i": 0, "c": 0, "n": 5},
        {"kind": "append", "i": 1, "c": 2, "n": 3},
        {"kind": "cconnect", "i": 2, "s": 0, "d": 2, "n": 4},
        {"kind": "label", "i": 3, "labels": ["a"], "cells": [1, 6], "add": True},
        {"kind": "file", "i": 4, "id": "f0", "size": 300},
        {"kind": "morph", "i": 5, "name": "m0", "n": 40},
        {"kind": "read", "i": 6},
    ]
    merge = {"kind": "append", "i": 7, "c": 1, "n": 3}
    base[0] = {**base[0], "m": ([0, -1, 0, 0, -1], ["A"])}
    CRASH_POINTS.update(
        {
            # the append returns (committed to the shard); the merge is then cut
            "merge": ([*base, merge], {"kind": "read", "i": 8}),
            "morphology-merge": (
                [*base, {**merge, "m": ([0, 1, -1], ["A", "B"])}],
                {"kind": "read", "i": 8},
            ),
            "connect-merge": (
                [*base, {"kind": "cconnect", "i": 7, "s": 1, "d": 0, "n": 2}],
                {"kind": "read", "i": 8},
            ),
            "file": (base, {"kind": "file", "i": 7, "id": "f0", "size": 5000}),
            "new-file": (base, {"kind": "file", "i": 7, "id": "f1", "size": 100}),
            "label": (
                base,
                {
                    "kind": "label",
                    "i": 7,
                    "labels": ["b"],
                    "cells": [0, 2, 7],
                    "add": True,
                },
            ),
            # a save returns (committed to the shard, like an append); the merge is cut
            "morph": (
                [*base, {"kind": "morph", "i": 7, "name": "m0", "n": 300}],
                {"kind": "read", "i": 8},
            ),
            "clear": (base, {"kind": "clear", "i": 7, "c": 0}),
        }
    )


_crash_point_scenarios()


def die_at_write(root: str, report: str, scenario: str, limit: int) -> None:
    """Run the last operation of a crash-point scenario, SIGKILLing the process
    instead of doing its ``limit``-th write to the root or to its undo log (counting
    from the start of the operation: every byte a write session puts on disk goes
    through :func:`bsb_store.core.writes.undo._pwrite`). Reports ``done:N`` (N writes)
    if it returns."""
    from bsb_store.core import ConnectivitySet, HDF5Engine, PlacementSet
    from bsb_store.core.writes import undo

    writes = {"armed": False, "count": 0}
    real_pwrite = undo._pwrite

    def tripwire(fd, data, offset):
        if writes["armed"]:
            if writes["count"] >= limit:
                os.kill(os.getpid(), signal.SIGKILL)
            writes["count"] += 1
        return real_pwrite(fd, data, offset)

    undo._pwrite = tripwire
    done, op = CRASH_POINTS[scenario]
    engine = HDF5Engine(root)
    ps, cs = PlacementSet(engine, M.CELLS), ConnectivitySet(engine, M.CONNS)
    if done[-1]["kind"] in ("append", "cconnect", "morph"):  # returned: in the shard
        execute(engine, ps, cs, done[-1])
    out = Report(report)
    out.line("ready")
    writes["armed"] = True
    execute(engine, ps, cs, op)
    writes["armed"] = False
    out.line(f"done:{writes['count']}")


FUNCTIONS = {
    "die_at_write": die_at_write,
    "run_plan": run_plan,
    "feed": feed,
    "consolidate": consolidate,
    "die_in_transaction": die_in_transaction,
}


# --------------------------------------------------------------------------- zygote
def _child(req: dict[str, Any]) -> None:
    code = 1
    try:
        null = os.open(os.devnull, os.O_RDWR)
        os.dup2(null, 0)
        os.dup2(null, 1)
        err = os.open(req["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(err, 2)
        os.environ.update(req.get("env") or {})
        FUNCTIONS[req["fn"]](**req["kwargs"])
        code = 0
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stderr.flush()
        os._exit(code)


def zygote() -> None:
    """Serve fork requests read as JSON lines on stdin; reply on stdout."""
    import bsb_store.core  # noqa: F401  (preloaded for every worker)
    from bsb_store.core.resources import morphologies  # noqa: F401

    for line in sys.stdin:
        req = json.loads(line)
        if req["cmd"] == "run":
            pid = os.fork()
            if pid == 0:
                _child(req)
            reply: dict[str, Any] = {"pid": pid}
        else:  # wait
            flags = os.WNOHANG if req.get("nohang") else 0
            try:
                pid, status = os.waitpid(req["pid"], flags)
            except ChildProcessError:
                pid, status = req["pid"], 0
            reply = {"running": pid == 0}
            if pid:
                reply["signal"] = os.WTERMSIG(status) if os.WIFSIGNALED(status) else 0
                reply["code"] = os.WEXITSTATUS(status) if os.WIFEXITED(status) else None
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()


class Zygote:
    """The test side of the zygote: start, kill and reap forked workers."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "zygote"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        self.live: set[int] = set()

    def _ask(self, **req: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the zygote process died")
        return json.loads(line)

    def start(self, fn: str, stderr: str, env: dict[str, str] | None = None, **kwargs):
        pid = self._ask(cmd="run", fn=fn, stderr=str(stderr), env=env, kwargs=kwargs)[
            "pid"
        ]
        self.live.add(pid)
        return pid

    def poll(self, pid: int) -> dict[str, Any] | None:
        """The exit status of ``pid`` if it ended (reaped), else None."""
        reply = self._ask(cmd="wait", pid=pid, nohang=True)
        if reply["running"]:
            return None
        self.live.discard(pid)
        return reply

    def wait(self, pid: int, timeout: float = 120.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            status = self.poll(pid)
            if status is not None:
                return status
            if time.monotonic() > deadline:
                raise TimeoutError(f"worker {pid} did not end within {timeout} s")
            time.sleep(0.005)

    def kill(self, pid: int) -> dict[str, Any]:
        """SIGKILL ``pid`` and reap it (its flock locks are gone when this returns)."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        reply = self._ask(cmd="wait", pid=pid)
        self.live.discard(pid)
        return reply

    def close(self) -> None:
        for pid in list(self.live):
            self.kill(pid)
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(timeout=30)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


# ------------------------------------------------------ independent-process workers
#: Cells placed in chunk (0, 0, 0) before the concurrent processes start: their global
#: ids (0 .. BASE_CELLS - 1) cannot shift, since every append goes to a chunk with a
#: higher id.
BASE_CELLS = 60


def proc_chunk(i: int) -> tuple[int, int, int]:
    return (1 + i % 5, i // 5 % 3, 0)


def _append_worker(root: str, writer: str, calls: str) -> None:
    """Placement appends and connection blocks (rows as :func:`feed_rows`); prints
    each call that returned."""
    from bsb_store.core import ConnectivitySet, HDF5Engine, PlacementSet

    engine = HDF5Engine(root)
    ps, cs = PlacementSet(engine, M.CELLS), ConnectivitySet(engine, M.CONNS)
    w = int(writer)
    for i in range(int(calls)):
        rows = feed_rows(w, i)
        ps.append_data(proc_chunk(i), rows)
        cs.chunk_connect(proc_chunk(i), (0, 0, 0), rows.astype(int), rows.astype(int))
        print(i, flush=True)
    engine.close()


def label_ids(step: int) -> list[int]:
    return list(range(0, BASE_CELLS, step))


def _label_worker(root: str, label: str, step: str, rounds: str) -> None:
    """Label, unlabel and label again (``rounds`` times, ending labelled) the cells
    ``label_ids(step)`` of chunk (0, 0, 0)."""
    from bsb_store.core import HDF5Engine, PlacementSet

    engine = HDF5Engine(root)
    ps = PlacementSet(engine, M.CELLS)
    ids = label_ids(int(step))
    for r in range(int(rounds)):
        if r:
            ps.remove_labels([label], ids)
        ps.label([label], ids)
        print(r, flush=True)
    engine.close()


def _read_worker(root: str, seconds: str) -> None:
    """Read in a loop; every observation must be consistent: counts never shrink,
    every appended call is whole, the base cells are intact."""
    from bsb_store.core import ConnectivitySet, HDF5Engine, PlacementSet

    engine = HDF5Engine(root)
    ps, cs = PlacementSet(engine, M.CELLS), ConnectivitySet(engine, M.CONNS)
    last_cells = last_conns = reads = 0
    deadline = time.monotonic() + float(seconds)
    while time.monotonic() < deadline:
        pos = ps.load_positions()
        conns = len(cs)
        assert len(pos) >= last_cells and conns >= last_conns, "a count went down"
        assert np.array_equal(pos[:BASE_CELLS, 1], np.arange(BASE_CELLS))
        for w in set(pos[BASE_CELLS:, 0].astype(int).tolist()):
            mine = pos[pos[:, 0] == w]
            for i in set(mine[:, 1].astype(int).tolist()):
                got = mine[mine[:, 1] == i][:, 2]
                assert got.tolist() == list(range(i % 4 + 1)), (w, i, got)
        last_cells, last_conns, reads = len(pos), conns, reads + 1
    print("reads", reads, flush=True)
    engine.close()


def _file_worker(root: str, fid: str, rounds: str) -> None:
    """Overwrite one file with contents of changing sizes; every load is whole."""
    from bsb_store.core import HDF5Engine

    engine = HDF5Engine(root)
    for r in range(int(rounds)):
        engine.files.store(
            M.file_content(r, 1000 + 5000 * (r % 7)), id=fid, overwrite=True
        )
        content, _ = engine.files.load(fid)
        unit = content[: content.index(">") + 1]
        assert content == (unit * len(content))[: len(content)], "a torn file"
        print(r, flush=True)
    engine.close()


SCRIPTS = {
    "append": _append_worker,
    "label": _label_worker,
    "read": _read_worker,
    "file": _file_worker,
}


if __name__ == "__main__":
    if sys.argv[1] == "zygote":
        zygote()
    else:
        SCRIPTS[sys.argv[1]](*sys.argv[2:])
