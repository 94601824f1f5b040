"""Loading positions: the whole set, and a chunk-filtered tenth of it.

Each repeat opens the store afresh and makes one cheap read (``len``), untimed, so
that every engine starts with its file open, then times the load call alone. The filter
is every tenth chunk (BSB's ``set_chunk_filter``); the floor reads those chunks' row
ranges from its flat dataset.
"""

from __future__ import annotations

from . import place
from .common import Context

NAME = "load_positions"


def run(ctx: Context) -> None:
    data = ctx.placement()
    subset = data.chunks[::10]
    expected_all = data.cells
    expected_sub = sum(len(p) for p in data.positions[::10])
    whole, filtered = {}, {}
    for name, backend in ctx.backends.items():
        path = place.ensure(ctx, name)

        def check(got, n, name=name):
            if len(got) != n:
                raise RuntimeError(f"{name}: loaded {len(got)} positions, expected {n}.")

        def load_all(h, backend=backend, check=check):
            check(backend.load_positions(h), expected_all)

        def load_sub(h, backend=backend, check=check):
            check(backend.load_positions(h, subset), expected_sub)

        whole[name] = ctx.best_of_open(backend, path, load_all, backend.count_cells)
        filtered[name] = ctx.best_of_open(backend, path, load_sub, backend.count_cells)
    ctx.add(f"load all positions ({expected_all:,})", whole)
    ctx.add(f"load positions of {len(subset)} chunks", filtered)
