"""Loading connections: the whole set (``out`` direction, every block concatenated, as
bsb's ``load_connections().all()`` does), and every connection of one local chunk
(``load_local_connections("out", chunk)``)."""

from __future__ import annotations

from . import connect
from .common import Context

NAME = "load_connections"


def run(ctx: Context) -> None:
    data = ctx.connectivity()
    chunk = data.local_chunk()
    expected_local = sum(len(b[2]) for b in data.blocks if int(b[0].id) == int(chunk.id))
    whole, local = {}, {}
    for name, backend in ctx.backends.items():
        path = connect.ensure(ctx, name)

        def load_all(h, backend=backend, name=name):
            pre, post = backend.load_connections(h)
            if len(pre) != data.connections or len(post) != data.connections:
                raise RuntimeError(f"{name}: loaded {len(pre)} connections.")

        def load_local(h, backend=backend, name=name):
            got = backend.load_local(h, chunk)
            if len(got[0]) != expected_local:
                raise RuntimeError(f"{name}: loaded {len(got[0])} local connections.")

        whole[name] = ctx.best_of_open(backend, path, load_all, backend.count_connections)
        local[name] = ctx.best_of_open(
            backend, path, load_local, backend.count_connections
        )
    ctx.add(f"load all connections ({data.connections:,})", whole)
    ctx.add(f"load one local chunk ({expected_local:,})", local)
