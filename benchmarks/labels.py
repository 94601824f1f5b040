"""Labels: ``label(labels, cells)`` calls on the placed set, each giving one new label
to a random fraction of the cells, then ``get_labelled`` of two of those labels.

Every repeat labels a fresh copy of the placed store. The floor keeps one int64 bit
mask per cell in one dataset (read, update, write the column per call).
"""

from __future__ import annotations

import gc
import math
import time

import numpy as np

from . import place
from .backends import remove_store
from .common import Context, label_targets

NAME = "labels"


def run(ctx: Context) -> None:
    s = ctx.sizes
    data = ctx.placement()
    targets = label_targets(data.cells, s.label_calls, s.label_fraction)
    query = [lab for labels, _ in targets[:2] for lab in labels]
    expected = len(np.unique(np.concatenate([ids for _, ids in targets[:2]])))
    labelling, reading = {}, {}
    for name, backend in ctx.backends.items():
        source = place.ensure(ctx, name)
        best_label = best_read = math.inf
        for _ in range(s.repeats):
            path = ctx.copy_of(source, "labels", name)
            h = backend.open(path)
            try:
                backend.count_cells(h)
                gc.collect()
                t0 = time.perf_counter()
                for labels, cells in targets:
                    backend.label(h, labels, cells)
                t1 = time.perf_counter()
                got = backend.get_labelled(h, query)
                t2 = time.perf_counter()
            finally:
                backend.close(h)
                remove_store(path)
            if len(got) != expected:
                raise RuntimeError(
                    f"{name}: {len(got)} labelled cells, expected {expected}."
                )
            best_label = min(best_label, t1 - t0)
            best_read = min(best_read, t2 - t1)
        labelling[name], reading[name] = best_label, best_read
    frac = f"{s.label_fraction:.0%}"
    ctx.add(f"label {s.label_calls} x {frac} of cells", labelling)
    ctx.add(f"get_labelled ({len(query)} labels)", reading)
