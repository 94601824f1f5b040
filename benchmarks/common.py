"""What every workload shares: sizes, the run context, timing and the test data.

Data is generated once per run from a fixed seed and handed to every backend, so each
backend writes the same bytes in the same order. Chunks and blocks differ in size
(within ±20% of the mean). Chunks are appended in ascending chunk
id order (the order bsb-core reads them back in), so the floor can answer a whole-set
read with one read, as a flat column would.
"""

from __future__ import annotations

import dataclasses
import gc
import math
import os
import shutil
import statistics
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: Edge of a chunk in the benchmark's (bsb) chunk grid, in µm.
CHUNK_SIZE = (100.0, 100.0, 100.0)


@dataclass
class Sizes:
    """Every size a workload uses; presets below, each overridable on the command line."""

    cells: int  # placed cells (positions), spread evenly ...
    chunks: int  # ... over this many chunks, one append per chunk
    connections: int  # connections, spread evenly over the blocks ...
    conn_chunks: int  # ... between this many chunks (a cube of them) ...
    fanout: int  # ... each connecting to `fanout` destination chunks (one block each)
    morphologies: int  # morphologies saved then loaded ...
    branches: int  # ... each with this many branches ...
    points: int  # ... of this many points
    label_calls: int  # label() calls, each labelling ...
    label_fraction: float  # ... this fraction of the cells (random)
    mpi_cells: int  # the MPI append workloads: cells ...
    mpi_chunks: int  # ... over chunks, shared by the ranks
    mpi_connections: int  # connections over mpi_chunks x fanout blocks
    iter_connections: int  # the connectivity set iterated for peak memory
    repeats: int  # timed repeats per workload (best of)

    @property
    def blocks(self) -> int:
        return self.conn_chunks * self.fanout

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


PRESETS: dict[str, Sizes] = {
    # Must run, not be fast: CI's smoke test (well under a minute).
    "smoke": Sizes(
        cells=4_000,
        chunks=8,
        connections=8_000,
        conn_chunks=8,
        fanout=2,
        morphologies=4,
        branches=7,
        points=20,
        label_calls=2,
        label_fraction=0.1,
        mpi_cells=4_000,
        mpi_chunks=8,
        mpi_connections=8_000,
        iter_connections=20_000,
        repeats=1,
    ),
    # A few minutes on a 2-core machine, bsb-hdf5 included.
    "default": Sizes(
        cells=1_000_000,
        chunks=1_000,
        connections=2_000_000,
        conn_chunks=125,
        fanout=8,
        morphologies=100,
        branches=31,
        points=32,
        label_calls=4,
        label_fraction=0.1,
        mpi_cells=500_000,
        mpi_chunks=500,
        mpi_connections=1_000_000,
        iter_connections=8_000_000,
        repeats=3,
    ),
    # 10^7 connections (about 0.5 GB of locations per direction).
    "large": Sizes(
        cells=2_000_000,
        chunks=2_000,
        connections=10_000_000,
        conn_chunks=216,
        fanout=10,
        morphologies=400,
        branches=63,
        points=32,
        label_calls=4,
        label_fraction=0.1,
        mpi_cells=1_000_000,
        mpi_chunks=1_000,
        mpi_connections=4_000_000,
        iter_connections=10_000_000,
        repeats=1,
    ),
}


# ----------------------------------------------------------------------- results
@dataclass
class Row:
    """One line of the main table: seconds per backend (``None``: not run)."""

    workload: str
    seconds: dict[str, float | None]
    note: str = ""


@dataclass
class Context:
    """What a workload gets: sizes, backends, a scratch directory, and results."""

    sizes: Sizes
    backends: dict[str, Any]  # name -> backends.Backend
    workdir: str
    rows: list[Row] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)  # workload -> extra numbers
    fixtures: dict[tuple[str, str], str] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)  # generated once per run
    log: Callable[[str], None] = print
    mpiexec: str | None = None
    timeout: float = 3600.0  # seconds, for each subprocess
    _counter: int = 0

    def placement(self) -> Placement:
        if "placement" not in self.data:
            s = self.sizes
            self.data["placement"] = make_placement(s.cells, s.chunks)
        return self.data["placement"]

    def connectivity(self) -> Connectivity:
        if "connectivity" not in self.data:
            s = self.sizes
            self.data["connectivity"] = make_connectivity(
                s.connections, s.conn_chunks, s.fanout
            )
        return self.data["connectivity"]

    def path(self, tag: str, backend: str) -> str:
        """A fresh root path for ``backend`` (nothing exists there yet)."""
        self._counter += 1
        d = os.path.join(self.workdir, backend)
        os.makedirs(d, exist_ok=True)
        return os.path.join(d, f"{tag}-{self._counter}.h5")

    def copy_of(self, path: str, tag: str, backend: str) -> str:
        """A copy of a closed store's root file (its sidecars are not needed)."""
        new = self.path(tag, backend)
        shutil.copyfile(path, new)
        return new

    def best_of_open(
        self,
        backend: Any,
        path: str,
        run: Callable[[Any], Any],
        prime: Callable[[Any], Any] | None = None,
    ) -> float:
        """Best time of ``run(h)`` over the repeats, each on a freshly opened store
        ``h``, primed by one untimed ``prime(h)`` call (a cheap read that opens the
        file), and closed afterwards."""

        def setup():
            h = backend.open(path)
            if prime is not None:
                prime(h)
            return h

        return best_of(self.sizes.repeats, setup, run, backend.close)

    def add(
        self, workload: str, seconds: dict[str, float | None], note: str = ""
    ) -> None:
        self.rows.append(Row(workload, seconds, note))
        shown = ", ".join(
            f"{k} {v:.4g} s" if v is not None else f"{k} -" for k, v in seconds.items()
        )
        self.log(f"  {workload}: {shown}")


# ------------------------------------------------------------------------ timing
def best_of(
    repeats: int,
    setup: Callable[[], Any],
    run: Callable[[Any], Any],
    teardown: Callable[[Any], Any] | None = None,
) -> float:
    """Best wall time of ``run(setup())`` over ``repeats``; neither ``setup`` nor
    ``teardown`` is timed."""
    best = math.inf
    for _ in range(max(1, repeats)):
        arg = setup()
        try:
            gc.collect()
            t0 = time.perf_counter()
            run(arg)
            best = min(best, time.perf_counter() - t0)
        finally:
            if teardown is not None:
                teardown(arg)
    return best


@dataclass
class AppendRuns:
    """Best results of an append workload on one backend (see :func:`run_appends`)."""

    appends: float  # best time of the appends alone
    total: float  # best time of the appends plus the first read (the merge)
    scoped: float  # best total with the appends inside a write scope
    best: dict[str, Any]  # the full result of the best run
    path: str  # the store the last plain run left (a fixture for read workloads)


def run_appends(
    ctx: Context, name: str, label: str, write: Callable[[str, bool], dict[str, Any]]
) -> AppendRuns:
    """Run ``write(path, scoped)`` ``repeats`` times plain and ``repeats`` times in a
    write scope, keeping the best times; the last plain store is kept, the others go."""
    from .backends import remove_store

    best, path, appends = None, None, math.inf
    for _ in range(ctx.sizes.repeats):
        if path is not None:
            remove_store(path)
        path = ctx.path(label, name)
        result = write(path, False)
        if best is None or result["total"] < best["total"]:
            best = result
        appends = min(appends, result["appends"])
    scoped = math.inf
    for _ in range(ctx.sizes.repeats):
        other = ctx.path(f"{label}-scoped", name)
        scoped = min(scoped, write(other, True)["total"])
        remove_store(other)
    return AppendRuns(appends, best["total"], scoped, best, path)


def append_workload(
    ctx: Context,
    label: str,
    fixture: str,
    write: Callable[[Any, str, bool], dict[str, Any]],
    payload_bytes: int,
    titles: tuple[str, str, str],
    extra: Callable[[Any, int], dict[str, Any]] = lambda backend, size: {},
) -> dict[str, dict[str, Any]]:
    """The three rows of an append workload (``titles``: appends, appends + first
    read, the same in a write scope) for every backend, through :func:`run_appends`
    with ``write(backend, path, scoped)``; keeps each backend's best plain store as
    the ``(fixture, name)`` fixture and returns the per-backend metrics (flatness and
    file size against ``payload_bytes``, plus what ``extra(backend, size)`` adds)."""
    rows: tuple[dict[str, float], ...] = ({}, {}, {})
    metrics = {}
    for name, backend in ctx.backends.items():
        runs = run_appends(ctx, name, label, lambda p, sc, b=backend: write(b, p, sc))
        for row, value in zip(rows, (runs.appends, runs.total, runs.scoped)):
            row[name] = value
        ctx.fixtures[(fixture, name)] = runs.path
        size = backend.store_bytes(runs.path)
        metrics[name] = {
            "flatness": flatness(runs.best["per_call"]),
            "file_bytes": size,
            "payload_bytes": payload_bytes,
            "file_ratio": size / payload_bytes,
            **extra(backend, size),
        }
    for title, row in zip(titles, rows):
        ctx.add(title, row)
    return metrics


PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def launch(cmd: list[str], timeout: float) -> None:
    """Run a benchmark worker (``python -m benchmarks...`` or ``mpiexec ...``) with the
    benchmarks package importable and MPICH kept quiet; raise with its output if it
    fails."""
    env = dict(os.environ)
    env.setdefault("UCX_LOG_LEVEL", "error")
    env.setdefault("MPIR_CVAR_CH4_NETMOD", "ofi")
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (PACKAGE_PARENT, env.get("PYTHONPATH")) if p
    )
    proc = subprocess.run(
        cmd, cwd=PACKAGE_PARENT, env=env, capture_output=True, text=True, timeout=timeout
    )
    if proc.returncode:
        raise RuntimeError(
            f"{' '.join(cmd[:3])} ... failed ({proc.returncode}):\n"
            f"{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
        )


def flatness(per_call: list[float]) -> dict[str, float]:
    """Per-call cost over the first and the last 10% of calls (medians), and their
    ratio: 1 means the cost does not grow with what is already stored."""
    k = max(1, len(per_call) // 10)
    first = statistics.median(per_call[:k])
    last = statistics.median(per_call[-k:])
    return {
        "calls": len(per_call),
        "first_ms": first * 1e3,
        "last_ms": last * 1e3,
        "ratio": last / first if first > 0 else math.nan,
    }


def tree_bytes(path: str) -> int:
    """Size of a file, or of every file under a directory."""
    if os.path.isdir(path):
        return sum(
            os.path.getsize(os.path.join(d, f))
            for d, _, files in os.walk(path)
            for f in files
        )
    return os.path.getsize(path) if os.path.exists(path) else 0


# -------------------------------------------------------------------------- data
def chunk_grid(n: int) -> list[tuple[int, int, int]]:
    """``n`` chunk coordinates filling a cube from the origin, sorted by bsb chunk id."""
    from bsb.storage._chunks import Chunk

    side = max(1, math.ceil(round(n ** (1 / 3), 9)))
    coords = [(x, y, z) for z in range(side) for y in range(side) for x in range(side)]
    coords = coords[:n]
    return sorted(coords, key=lambda c: int(Chunk(c, CHUNK_SIZE).id))


def bsb_chunks(coords: Iterable[tuple[int, int, int]]) -> list[Any]:
    from bsb.storage._chunks import Chunk

    return [Chunk(c, CHUNK_SIZE) for c in coords]


def split(total: int, parts: int, rng: np.random.Generator | None = None) -> list[int]:
    """``total`` items over ``parts``: evenly, or with ``rng`` each part drawn within
    ±20% of the mean (real chunks differ in density; equal parts could also sit on a
    size an engine happens to favour, such as a power of two)."""
    if rng is None or parts < 2:
        base, extra = divmod(total, parts)
        return [base + (i < extra) for i in range(parts)]
    weights = 0.8 + 0.4 * rng.random(parts)
    counts = np.floor(weights / weights.sum() * total).astype(np.int64)
    counts[: total - int(counts.sum())] += 1
    return counts.tolist()


@dataclass
class Placement:
    chunks: list[Any]  # bsb Chunks in ascending id order
    positions: list[np.ndarray]  # (n, 3) float64 per chunk

    @property
    def cells(self) -> int:
        return sum(len(p) for p in self.positions)

    @property
    def nbytes(self) -> int:
        return sum(p.nbytes for p in self.positions)


def make_placement(cells: int, chunks: int, seed: int = 1) -> Placement:
    rng = np.random.default_rng(seed)
    coords = chunk_grid(chunks)
    pos = []
    for c, n in zip(coords, split(cells, len(coords), rng)):
        origin = np.asarray(c, float) * CHUNK_SIZE
        pos.append(origin + rng.random((n, 3)) * CHUNK_SIZE)
    return Placement(bsb_chunks(coords), pos)


@dataclass
class Connectivity:
    blocks: list[tuple[Any, Any, np.ndarray, np.ndarray]]  # src, dst, src_locs, dst_locs

    @property
    def connections(self) -> int:
        return sum(len(b[2]) for b in self.blocks)

    @property
    def nbytes(self) -> int:
        """Bytes handed to the API: both location arrays, once."""
        return sum(b[2].nbytes + b[3].nbytes for b in self.blocks)

    def local_chunk(self) -> Any:
        """A source chunk in the middle of the set (for the one-chunk read)."""
        srcs = sorted({int(b[0].id): b[0] for b in self.blocks}.items())
        return srcs[len(srcs) // 2][1]


def make_connectivity(
    connections: int, conn_chunks: int, fanout: int, seed: int = 2
) -> Connectivity:
    """Blocks over chunk pairs: every chunk of a cube connects to ``fanout`` others.
    Locations are point-neuron style ``[cell, -1, -1]``; blocks in (source id,
    destination id) order."""
    rng = np.random.default_rng(seed)
    chunks = bsb_chunks(chunk_grid(conn_chunks))
    n = len(chunks)
    fanout = min(fanout, n)
    pairs = []
    for i, src in enumerate(chunks):
        step = max(1, n // fanout)
        dsts = {(i + j * step) % n for j in range(fanout)}
        j = 0
        while len(dsts) < fanout:  # tiny grids: fill up with the next chunks
            dsts.add((i + j) % n)
            j += 1
        for d in sorted(dsts, key=lambda d: int(chunks[d].id)):
            pairs.append((src, chunks[d]))
    blocks = []
    for (src, dst), k in zip(pairs, split(connections, len(pairs), rng)):
        s = np.full((k, 3), -1, dtype=np.int64)
        t = np.full((k, 3), -1, dtype=np.int64)
        s[:, 0] = rng.integers(0, 1000, k)
        t[:, 0] = rng.integers(0, 1000, k)
        blocks.append((src, dst, s, t))
    return Connectivity(blocks)


@dataclass
class MorphologySpec:
    """Arrays of one morphology: a binary tree of branches."""

    name: str
    points: np.ndarray  # (n, 3)
    radii: np.ndarray  # (n,)
    branch_ends: np.ndarray  # (B,) exclusive end row of each branch
    parents: np.ndarray  # (B,) -1 for the root

    @property
    def nbytes(self) -> int:
        return (
            self.points.nbytes
            + self.radii.nbytes
            + len(self.radii) * 8  # per-point labels (int64) as stored
            + self.branch_ends.nbytes
            + self.parents.nbytes
        )


def make_morphologies(
    count: int, branches: int, points: int, seed: int = 3
) -> list[MorphologySpec]:
    rng = np.random.default_rng(seed)
    out = []
    for m in range(count):
        n = branches * points
        pts = np.cumsum(rng.normal(0, 1, (n, 3)), axis=0)
        radii = rng.random(n) + 0.5
        ends = np.arange(1, branches + 1, dtype=np.int64) * points
        parents = np.asarray([-1] + [(b - 1) // 2 for b in range(1, branches)], np.int64)
        out.append(MorphologySpec(f"morpho_{m:05d}", pts, radii, ends, parents))
    return out


def label_targets(cells: int, calls: int, fraction: float, seed: int = 4) -> list:
    """(labels, sorted cell ids) of each label call."""
    rng = np.random.default_rng(seed)
    k = max(1, int(cells * fraction))
    return [
        ([f"label_{i}"], np.sort(rng.choice(cells, k, replace=False)))
        for i in range(calls)
    ]
