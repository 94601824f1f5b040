"""Block iteration: every block in both directions through the per-block calls
(``get_local_chunks``, ``get_global_chunks``, ``load_block_connections``), the access
pattern of code that walks a connectivity set chunk pair by chunk pair."""

from __future__ import annotations

from . import connect
from .common import Context

NAME = "iterate_blocks"


def run(ctx: Context) -> None:
    data = ctx.connectivity()
    seconds = {}
    for name, backend in ctx.backends.items():
        path = connect.ensure(ctx, name)

        def iterate(h, backend=backend, name=name):
            rows = backend.iterate_blocks(h)
            if rows != 2 * data.connections:
                raise RuntimeError(f"{name}: iterated {rows} rows.")

        seconds[name] = ctx.best_of_open(
            backend, path, iterate, backend.count_connections
        )
    ctx.add(f"iterate {2 * len(data.blocks):,} blocks (inc + out)", seconds)
