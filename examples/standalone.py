"""A small network stored and read back with the standalone API (numpy only).

Run: python examples/standalone.py [ROOT]
"""

from __future__ import annotations

import sys

import numpy as np

from bsb_store import Chunk, ConnectivitySet, HDF5Engine, PlacementSet
from bsb_store.core.resources.morphologies import MorphologyData


def build(root: str) -> HDF5Engine:
    rng = np.random.default_rng(42)
    engine = HDF5Engine(root)
    engine.create()
    size = 100.0
    granule = PlacementSet.require(engine, "granule_cell")
    golgi = PlacementSet.require(engine, "golgi_cell")
    engine.morphologies.save(
        "golgi",
        MorphologyData(points=rng.random((20, 3)) * 10, radii=np.ones(20)),
    )
    for x in range(2):
        for y in range(2):
            chunk = Chunk((x, y, 0), size)
            origin = np.array([x, y, 0]) * size
            granule.append_data(
                chunk,
                origin + rng.random((250, 3)) * size,
                additional={"volume": rng.random(250)},
            )
            golgi.append_data(
                chunk,
                origin + rng.random((5, 3)) * size,
                rotations=rng.random((5, 3)) * 360,
                morphologies=(np.zeros(5, int), ["golgi"]),
            )
    granule.label(
        ["near_origin"],
        np.flatnonzero(np.linalg.norm(granule.load_positions(), axis=1) < 50),
    )
    cs = ConnectivitySet.require(engine, "granule_cell", "golgi_cell")
    pre = rng.integers(0, len(granule), 2000)
    post = rng.integers(0, len(golgi), 2000)
    cs.connect(granule, golgi, pre, post)
    engine.files.store('{"name": "example"}', id="config.json")
    return engine


def report(engine: HDF5Engine) -> None:
    print(f"store {engine.root}  storage_id={engine.storage_id} state={engine.state_id}")
    for name in PlacementSet.list(engine):
        ps = PlacementSet(engine, name)
        print(
            f"  placement {name:13s} {len(ps):5d} cells in "
            f"{len(ps.get_all_chunks())} chunks"
        )
    for tag in ConnectivitySet.get_tags(engine):
        cs = ConnectivitySet(engine, tag)
        print(
            f"  connectivity {tag}: {len(cs)} connections, "
            f"{len(cs.get_local_chunks('out'))} presynaptic chunks"
        )
    labelled = PlacementSet(engine, "granule_cell").get_labelled(["near_origin"])
    print(f"  {len(labelled)} granule cells labelled near_origin")
    print(
        f"  morphologies: {engine.morphologies.list()}  files: {list(engine.files.all())}"
    )
    stats = engine.get_chunk_stats()
    print(f"  chunk stats: {stats}")


if __name__ == "__main__":
    root = sys.argv[1] if len(sys.argv) > 1 else "example_network.h5"
    engine = build(root)
    engine.close()
    report(HDF5Engine(root))
