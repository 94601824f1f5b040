"""Morphologies: saving M morphologies one ``save(name, morphology)`` call each, then
loading each by name.

Three rows, as for the appends: the saves alone (the time until every call returned);
the saves plus the first read (loading the first morphology), which for bsb-store is
where the saves, committed to the writer's shard, are merged into the root; and the M
loads after that first read.

bsb-store and bsb-hdf5 take and return bsb ``Morphology`` objects, so their times
include bsb-core's conversions (``optimize`` on save, building branches on load); the
floor writes and reads the same arrays (points, radii, labels, branch ends, parents)
as one group of datasets per morphology. The objects to save are built untimed.
"""

from __future__ import annotations

import gc
import math
import time

from .backends import remove_store
from .common import Context, make_morphologies

NAME = "morphologies"


def run(ctx: Context) -> None:
    s = ctx.sizes
    specs = make_morphologies(s.morphologies, s.branches, s.points)
    saving, first_read, loading = {}, {}, {}
    for name, backend in ctx.backends.items():
        best_save = best_first = best_load = math.inf
        for _ in range(s.repeats):
            path = ctx.path("morphologies", name)
            objects = [backend.make_morphology(spec) for spec in specs]
            h = backend.create(path)
            try:
                gc.collect()
                t0 = time.perf_counter()
                for spec, obj in zip(specs, objects):
                    backend.save_morphology(h, spec.name, obj)
                t1 = time.perf_counter()
                backend.load_morphology(h, specs[0].name)
                t2 = time.perf_counter()
                loaded = [backend.load_morphology(h, spec.name) for spec in specs]
                t3 = time.perf_counter()
            finally:
                backend.close(h)
                remove_store(path)
            if len(loaded) != len(specs):
                raise RuntimeError(f"{name}: loaded {len(loaded)} morphologies.")
            best_save = min(best_save, t1 - t0)
            best_first = min(best_first, t2 - t0)
            best_load = min(best_load, t3 - t2)
        saving[name], first_read[name] = best_save, best_first
        loading[name] = best_load
    points = s.branches * s.points
    ctx.add(f"save {s.morphologies} morphologies ({points:,} points)", saving)
    ctx.add("save + first read (merge)", first_read)
    ctx.add(f"load {s.morphologies} morphologies", loading)
