"""Compile the example network into a bsb-store file and print what was stored.

Does what ``bsb compile -w examples/network.yaml`` does (parse the configuration, build
the Scaffold on the ``store`` engine, compile with ``clear=True``), then reopens the
file with ``bsb.from_storage`` and reports it. Run it from anywhere; paths in the
configuration are relative to the repository root, where ``network.h5`` is written::

    python examples/run.py              # serial
    mpiexec -n 2 python examples/run.py # parallel (needs mpi4py and mpipool)
    python examples/run.py --no-compile # only report an existing network.h5
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from bsb import MPI, Scaffold, from_storage, parse_configuration_file

HERE = Path(__file__).resolve().parent


def report(network) -> None:
    storage = network.storage
    print(f"storage: engine={storage.format!r} root={storage.root}")
    print(f"storage_id={network.storage_id} state_id={network.state_id}")
    print("placement sets:")
    for ps in network.get_placement_sets():
        try:
            morphologies = sorted(set(ps.load_morphologies().names))
        except Exception:  # sets without morphologies (entities, point neurons)
            morphologies = []
        chunks = ps.get_chunk_stats()
        print(
            f"  {ps.tag:<12} {len(ps):>5} cells in {len(chunks)} chunks"
            + (f", morphologies {morphologies}" if morphologies else "")
            + (", entities" if ps.cell_type.entity else "")
        )
    print("connectivity sets:")
    for cs in network.get_connectivity_sets():
        _, post = cs.load_connections().as_globals().all()
        branches = int((post[:, 1] >= 0).sum())
        print(
            f"  {cs.tag:<26} {len(cs):>6} connections {cs.pre_type_name} -> "
            f"{cs.post_type_name}; {branches} on a branch; "
            f"{len(cs.get_local_chunks('out'))} presynaptic chunks"
        )
    print("morphologies:", ", ".join(network.morphologies.list()) or "none")
    print("files:")
    for fid, meta in network.files.all().items():
        kind = "active config" if meta.get("active_config") else meta.get("source", "")
        print(f"  {fid}  {kind}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-compile", action="store_true", help="only report")
    args = parser.parse_args()
    os.chdir(HERE.parent)  # the configuration's paths are relative to the repo root
    config = parse_configuration_file(str(HERE / "network.yaml"))
    if not args.no_compile:
        Scaffold(config).compile(clear=True)
    # Reopen the way `bsb simulate` does: open_storage picks the engine that
    # recognizes the file (ours), then the network is rebuilt from the stored config.
    network = from_storage(config.storage.root)
    stats = network.storage.get_chunk_stats()  # collective: every rank calls it
    if MPI.get_rank() == 0:
        report(network)
        placed = sum(v["placed"] for v in stats.values())
        out = sum(v["connections"]["out"] for v in stats.values())
        print(f"chunk stats: {len(stats)} chunks, {placed} cells, {out} outgoing conns")
        for key, value in list(stats.items())[:4]:
            print(f"  chunk {key}: {value}")


if __name__ == "__main__":
    main()
