"""Connecting K connections in blocks over chunk pairs, one ``chunk_connect(src, dst,
src_locs, dst_locs)`` per block.

Rows (plain, and inside ``Storage.write_scope()``), flatness and file size as in
:mod:`benchmarks.place`. bsb-hdf5 and bsb-store
keep every block twice (BSB's ``out`` and ``inc`` directions), the floor once; the file
ratio is given against the bytes handed to the API and against the bytes the engine's
layout must hold (both directions).
"""

from __future__ import annotations

import contextlib
import gc
import time

from .backends import Backend
from .common import Connectivity, Context, append_workload

NAME = "connect"


def _connect(
    backend: Backend, path: str, data: Connectivity, scoped: bool = False
) -> dict:
    h = backend.create(path)
    try:
        per_call = []
        gc.collect()
        t0 = time.perf_counter()
        with backend.write_scope(h) if scoped else contextlib.nullcontext():
            for src, dst, s, t in data.blocks:
                tc = time.perf_counter()
                backend.connect(h, src, dst, s, t)
                per_call.append(time.perf_counter() - tc)
        t1 = time.perf_counter()
        n = backend.count_connections(h)
        t2 = time.perf_counter()
    finally:
        backend.close(h)
    if n != data.connections:
        raise RuntimeError(
            f"{backend.name}: stored {data.connections} connections, read back {n}."
        )
    return {"appends": t1 - t0, "total": t2 - t0, "per_call": per_call}


def build(ctx: Context, name: str, data: Connectivity) -> str:
    """A closed store holding ``data`` (untimed)."""
    path = ctx.path("connected", name)
    _connect(ctx.backends[name], path, data)
    return path


def ensure(ctx: Context, name: str) -> str:
    """A closed store holding the connectivity data (built untimed if needed)."""
    key = ("connected", name)
    if key not in ctx.fixtures:
        ctx.fixtures[key] = build(ctx, name, ctx.connectivity())
    return ctx.fixtures[key]


def run(ctx: Context) -> None:
    data, c = ctx.connectivity(), ctx.sizes
    metrics = append_workload(
        ctx,
        "connect",
        "connected",
        lambda b, path, scoped: _connect(b, path, data, scoped),
        data.nbytes,
        (
            f"connect {c.connections:,} in {len(data.blocks):,} blocks",
            "connect + first read (merge)",
            "connect in write_scope + first read",
        ),
        lambda backend, size: {
            "directions": backend.directions,
            "file_ratio_per_direction": size / (data.nbytes * backend.directions),
        },
    )
    ctx.metrics[NAME] = metrics
