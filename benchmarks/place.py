"""Placing N cells over C chunks, one ``append_data(chunk, positions)`` per chunk.

Three rows: the appends alone (the time until every call returned); the appends plus
the first read (``len(ps)``), which for bsb-store is where the writer's shard is merged
into the root (the floor flushes there); and the same inside bsb's
``Storage.write_scope()``, which lets an engine batch the appends (a no-op for the
floor). Also measures the per-append cost over
the first and the last 10% of appends (flatness) and the file size against the bytes
of positions stored.
"""

from __future__ import annotations

import contextlib
import gc
import time

from .backends import Backend
from .common import Context, append_workload

NAME = "place"


def _place(backend: Backend, path: str, ctx: Context, scoped: bool = False) -> dict:
    data = ctx.placement()
    h = backend.create(path)
    try:
        per_call = []
        gc.collect()
        t0 = time.perf_counter()
        with backend.write_scope(h) if scoped else contextlib.nullcontext():
            for chunk, pos in zip(data.chunks, data.positions):
                t = time.perf_counter()
                backend.append_positions(h, chunk, pos)
                per_call.append(time.perf_counter() - t)
        t1 = time.perf_counter()
        n = backend.count_cells(h)
        t2 = time.perf_counter()
    finally:
        backend.close(h)
    if n != data.cells:
        raise RuntimeError(f"{backend.name}: placed {data.cells} cells, read back {n}.")
    return {"appends": t1 - t0, "total": t2 - t0, "per_call": per_call}


def ensure(ctx: Context, name: str) -> str:
    """A closed store holding the placement data (built untimed if needed)."""
    key = ("placed", name)
    if key not in ctx.fixtures:
        path = ctx.path("placed", name)
        _place(ctx.backends[name], path, ctx)
        ctx.fixtures[key] = path
    return ctx.fixtures[key]


def run(ctx: Context) -> None:
    c = ctx.sizes
    metrics = append_workload(
        ctx,
        "place",
        "placed",
        lambda b, path, scoped: _place(b, path, ctx, scoped),
        ctx.placement().nbytes,
        (
            f"place {c.cells:,} cells / {c.chunks:,} appends",
            "place + first read (merge)",
            "place in write_scope + first read",
        ),
    )
    ctx.metrics[NAME] = metrics
