"""The append workloads from ``mpiexec -n 1`` and ``mpiexec -n 2``.

The runner launches this module under ``mpiexec`` once per backend and rank count. Each
rank builds the same data, then appends its share (chunk ``i`` and block ``i`` go to
rank ``i % size``): first the placement, then the connections. Timings are taken
between barriers, so *wall* is the time until the slowest rank's last append returned;
*merged* adds a read on rank 0 (for bsb-store the read that merges every shard). The
same total work runs on 1 and on 2 ranks; the throughput ratio is wall(1) / wall(2).
A pure-Python loop split the same way calibrates what the machine itself gives two
processes (``cpu_speedup``): two idle cores give 2x.

The floor is plain h5py with one file per rank (h5py wheels have no MPI-IO), so it
shows what two independent writers get from this machine.

Worker usage (the runner builds this command)::

    mpiexec -n 2 python -m benchmarks.mpi_append --backend store --dir D --out R.json \\
        --cells N --chunks C --connections K --conn-chunks CC --fanout F --repeats R
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from .common import Context, launch, make_connectivity, make_placement

NAME = "mpi_append"


# -------------------------------------------------------------------- the runner
def run(ctx: Context) -> None:
    if ctx.mpiexec is None:
        ctx.log("  (skipped: no mpiexec found; install the `mpi` extra)")
        ctx.metrics[NAME] = {"skipped": "no mpiexec"}
        return
    s = ctx.sizes
    results: dict[str, dict[int, dict]] = {}
    for name in ctx.backends:
        results[name] = {}
        for n in (1, 2):
            out = os.path.join(ctx.workdir, f"mpi-{name}-{n}.json")
            d = os.path.join(ctx.workdir, f"mpi-{name}-{n}")
            os.makedirs(d, exist_ok=True)
            cmd = [
                ctx.mpiexec,
                "-n",
                str(n),
                sys.executable,
                "-m",
                "benchmarks.mpi_append",
                "--backend",
                name,
                "--dir",
                d,
                "--out",
                out,
                "--cells",
                str(s.mpi_cells),
                "--chunks",
                str(s.mpi_chunks),
                "--connections",
                str(s.mpi_connections),
                "--conn-chunks",
                str(s.conn_chunks),
                "--fanout",
                str(s.fanout),
                "--repeats",
                str(s.repeats),
            ]
            launch(cmd, ctx.timeout)
            with open(out) as f:
                results[name][n] = json.load(f)
    metrics = {}
    for name, by_n in results.items():
        one, two = by_n[1], by_n[2]
        metrics[name] = {
            "cpu_speedup": one["cpu"]["wall"] / two["cpu"]["wall"],
            "n1": one,
            "n2": two,
            "place_speedup": one["place"]["wall"] / two["place"]["wall"],
            "connect_speedup": one["connect"]["wall"] / two["connect"]["wall"],
            "place_speedup_merged": one["place"]["merged"] / two["place"]["merged"],
            "connect_speedup_merged": one["connect"]["merged"] / two["connect"]["merged"],
        }
    ctx.metrics[NAME] = metrics
    for what in ("place", "connect"):
        for n in (1, 2):
            ctx.add(
                f"{what} appends, mpiexec -n {n}",
                {name: results[name][n][what]["wall"] for name in results},
            )


# -------------------------------------------------------------------- the worker
def _timed(comm, fn) -> tuple[float, float]:
    """(own seconds, wall seconds between barriers) of ``fn()`` on every rank."""
    comm.Barrier()
    t0 = time.perf_counter()
    fn()
    own = time.perf_counter() - t0
    comm.Barrier()
    return own, time.perf_counter() - t0


#: Iterations of the pure-Python calibration loop (split over the ranks).
CPU_WORK = 3_000_000


def _spin(n: int) -> int:
    total = 0
    for i in range(n):
        total += i
    return total


def _calibrate(comm) -> dict:
    """The machine's own ceiling: a CPU-bound loop, the same total work split over the
    ranks, timed like the appends. Two ranks on two idle cores give 2x."""
    share = CPU_WORK // comm.Get_size()
    own, wall = _timed(comm, lambda: _spin(share))
    return {"wall": wall, "merged": wall, "rank_seconds": comm.gather(own, root=0)}


def _one_round(comm, backend, path: str, placement, connectivity) -> dict:
    rank, size = comm.Get_rank(), comm.Get_size()
    per_rank = backend.name == "floor"  # plain h5py: one file per rank
    if per_rank:
        path = path[: -len(".h5")] + f"-rank{rank}.h5"
    h = backend.create(path, None if per_rank else comm)
    out = {}
    try:
        mine = [i for i in range(len(placement.chunks)) if i % size == rank]
        blocks = [b for i, b in enumerate(connectivity.blocks) if i % size == rank]

        def place():
            for i in mine:
                backend.append_positions(h, placement.chunks[i], placement.positions[i])

        def connect():
            for src, dst, s, t in blocks:
                backend.connect(h, src, dst, s, t)

        for what, fn, count in (
            ("place", place, backend.count_cells),
            ("connect", connect, backend.count_connections),
        ):
            own, wall = _timed(comm, fn)
            t0 = time.perf_counter()
            if per_rank or rank == 0:
                count(h)
            comm.Barrier()
            merged = wall + time.perf_counter() - t0
            owns = comm.gather(own, root=0)
            out[what] = {"wall": wall, "merged": merged, "rank_seconds": owns}
    finally:
        backend.close(h)
        comm.Barrier()
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.mpi_append")
    p.add_argument("--backend", required=True)
    p.add_argument("--dir", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--cells", type=int, required=True)
    p.add_argument("--chunks", type=int, required=True)
    p.add_argument("--connections", type=int, required=True)
    p.add_argument("--conn-chunks", type=int, required=True)
    p.add_argument("--fanout", type=int, required=True)
    p.add_argument("--repeats", type=int, default=1)
    a = p.parse_args(argv)

    from mpi4py import MPI

    from .backends import get_backend

    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    backend = get_backend(a.backend)
    placement = make_placement(a.cells, a.chunks)
    connectivity = make_connectivity(a.connections, a.conn_chunks, a.fanout)
    # One-off costs (imports, engine discovery) before anything is timed.
    if backend.name == "floor":
        backend.warm_up(os.path.join(a.dir, f"warmup-{rank}.h5"))
    else:
        backend.warm_up(os.path.join(a.dir, "warmup.h5"), comm)
    comm.Barrier()
    best: dict = {}
    for r in range(max(1, a.repeats)):
        path = os.path.join(a.dir, f"round{r}.h5")
        result = _one_round(comm, backend, path, placement, connectivity)
        result["cpu"] = _calibrate(comm)
        for what, numbers in result.items():
            if what not in best or numbers["wall"] < best[what]["wall"]:
                best[what] = numbers
    if rank == 0:
        best["ranks"] = size
        best["cells"] = placement.cells
        best["connections"] = connectivity.connections
        with open(a.out, "w") as f:
            json.dump(best, f)


if __name__ == "__main__":
    main()
