"""Morphologies: saving M morphologies one ``save(name, morphology)`` call each, then
loading each by name.

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
    saving, loading = {}, {}
    for name, backend in ctx.backends.items():
        best_save = best_load = math.inf
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
                loaded = [backend.load_morphology(h, spec.name) for spec in specs]
                t2 = time.perf_counter()
            finally:
                backend.close(h)
                remove_store(path)
            if len(loaded) != len(specs):
                raise RuntimeError(f"{name}: loaded {len(loaded)} morphologies.")
            best_save = min(best_save, t1 - t0)
            best_load = min(best_load, t2 - t1)
        saving[name], loading[name] = best_save, best_load
    points = s.branches * s.points
    ctx.add(f"save {s.morphologies} morphologies ({points:,} points)", saving)
    ctx.add(f"load {s.morphologies} morphologies", loading)
