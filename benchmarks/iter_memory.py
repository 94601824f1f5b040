"""Peak memory of iterating every connection of a large set (``out`` direction).

The runner builds the set (untimed; the connectivity fixture when the sizes agree) and
a set a quarter of its size, then runs this module in a fresh process per backend and
set, which opens the store, makes one
cheap read, and iterates block by block (``flat_iter_connections``; the floor reads
2**18 rows at a time), dropping each block. It reports the growth of the process's peak
RSS during the iteration (Linux: the kernel's peak mark, reset just before; elsewhere
``ru_maxrss``, which may hide growth below the peak of the imports) and the peak of Python/numpy allocations
(``tracemalloc``), against the bytes iterated. Bounded memory means the growth does not
scale with the set: the *marginal* growth, (growth(set) - growth(quarter set)) / (bytes
of the set - bytes of the quarter set), is near zero.

Worker usage::

    python -m benchmarks.iter_memory --backend store --path ROOT.h5 --out R.json
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import sys
import time
import tracemalloc

from . import connect
from .common import Context, launch, make_connectivity

NAME = "iter_memory"


def _maxrss_bytes() -> int:
    scale = 1 if sys.platform == "darwin" else 1024  # Linux reports KiB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def _status_bytes(key: str) -> int | None:
    """``VmRSS``/``VmHWM`` of this process from /proc (Linux), in bytes."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _reset_peak() -> bool:
    """Reset the kernel's peak-RSS mark (Linux >= 4.0), so that the peak measured
    afterwards is the iteration's and not the imports'."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return _status_bytes("VmHWM") is not None


def _rss_now() -> int:
    value = _status_bytes("VmRSS")
    return value if value is not None else _maxrss_bytes()


def _rss_peak(exact: bool) -> int:
    value = _status_bytes("VmHWM") if exact else None
    return value if value is not None else _maxrss_bytes()


def _set_path(ctx: Context, name: str, connections: int) -> str:
    """A closed store holding ``connections`` connections (built untimed; the
    connectivity fixture when the size is the same)."""
    s = ctx.sizes
    if connections == s.connections:
        return connect.ensure(ctx, name)
    key = (f"iter_set_{connections}", name)
    if key not in ctx.fixtures:
        data = ctx.data.get(key[0])
        if data is None:
            data = ctx.data[key[0]] = make_connectivity(
                connections, s.conn_chunks, s.fanout, seed=5
            )
        ctx.fixtures[key] = connect.build(ctx, name, data)
    return ctx.fixtures[key]


def _measure(ctx: Context, name: str, path: str) -> dict:
    out = os.path.join(ctx.workdir, f"iter-{name}.json")
    cmd = [sys.executable, "-m", "benchmarks.iter_memory"]
    cmd += ["--backend", name, "--path", path, "--out", out]
    launch(cmd, ctx.timeout)
    with open(out) as f:
        return json.load(f)


def run(ctx: Context) -> None:
    """Iterate the set, and a quarter of it: memory that does not depend on the set's
    size shows as the same growth for both (``marginal`` near 0); an engine that holds
    the set in memory grows by about the extra bytes (``marginal`` near 1 or more)."""
    s = ctx.sizes
    small_n = max(1, s.iter_connections // 4)
    metrics, seconds = {}, {}
    for name in ctx.backends:
        big = _measure(ctx, name, _set_path(ctx, name, s.iter_connections))
        small = _measure(ctx, name, _set_path(ctx, name, small_n))
        extra = big["bytes_iterated"] - small["bytes_iterated"]
        big["small_set"] = small
        big["marginal"] = (
            (big["rss_growth"] - small["rss_growth"]) / extra if extra else 0.0
        )
        metrics[name] = big
        seconds[name] = big["seconds"]
    ctx.metrics[NAME] = metrics
    # Not a row of the main table: tracemalloc slows the iteration it measures.
    shown = ", ".join(f"{k} {v:.3g} s" for k, v in seconds.items())
    ctx.log(f"  iterated {s.iter_connections:,} connections (traced): {shown}")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.iter_memory")
    p.add_argument("--backend", required=True)
    p.add_argument("--path", required=True)
    p.add_argument("--out", required=True)
    a = p.parse_args(argv)

    from .backends import get_backend

    backend = get_backend(a.backend)
    h = backend.open(a.path)
    try:
        total = backend.count_connections(h)
        gc.collect()
        exact = _reset_peak()
        rss0 = _rss_now() if exact else _maxrss_bytes()
        tracemalloc.start()
        t0 = time.perf_counter()
        rows = nbytes = 0
        for pre, post in backend.iter_connections(h):
            rows += len(pre)
            nbytes += pre.nbytes + post.nbytes
            del pre, post
        seconds = time.perf_counter() - t0
        _, traced_peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        rss1 = _rss_peak(exact)
    finally:
        backend.close(h)
    if rows != total:
        raise SystemExit(f"iterated {rows} of {total} connections")
    with open(a.out, "w") as f:
        json.dump(
            {
                "rows": rows,
                "bytes_iterated": nbytes,
                "seconds": seconds,
                "rss_before": rss0,
                "rss_peak": rss1,
                "rss_growth": rss1 - rss0,
                "peak_method": "VmHWM after clear_refs" if exact else "ru_maxrss",
                "traced_peak": traced_peak,
                "growth_ratio": (rss1 - rss0) / nbytes if nbytes else 0.0,
            },
            f,
        )


if __name__ == "__main__":
    main()
