"""Run every workload for every engine in one go, print a table, write JSON.

::

    python -m benchmarks              # default sizes: a few minutes on 2 cores
    python -m benchmarks --smoke      # tiny sizes (CI: it must run, not be fast)
    python -m benchmarks --large      # 10^7 connections
    python -m benchmarks --engines floor,store --workloads place,connect --repeats 1

Engines: ``floor`` (plain h5py, one open file), ``store`` (bsb-store through bsb-core's
``Storage``), ``hdf5`` (bsb-hdf5 through ``Storage``), and optionally ``store-core``
(bsb-store's standalone core API; used automatically for ``store`` when bsb-core does
not list the plugin).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import importlib
import json
import os
import platform
import shutil
import sys
import tempfile
import time
import traceback

from . import backends as backends_mod
from . import report
from .common import PRESETS, Context

WORKLOADS = (
    "place",
    "connect",
    "load_positions",
    "load_connections",
    "iterate_blocks",
    "labels",
    "morphologies",
    "mpi_append",
    "iter_memory",
)
DEFAULT_JSON = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "results", "latest.json"
)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="bsb-store vs bsb-hdf5 vs plain h5py, side by side.",
    )
    size = p.add_mutually_exclusive_group()
    size.add_argument("--smoke", action="store_true", help="tiny sizes (CI smoke test)")
    size.add_argument("--large", action="store_true", help="10^7 connections")
    p.add_argument(
        "--engines",
        default="floor,store,hdf5",
        help="comma-separated: floor, store, hdf5, store-core (default: %(default)s)",
    )
    p.add_argument(
        "--workloads",
        default=",".join(WORKLOADS),
        help="comma-separated subset of: " + ", ".join(WORKLOADS),
    )
    p.add_argument("--json", default=DEFAULT_JSON, help="results file (%(default)s)")
    p.add_argument(
        "--workdir", default=None, help="scratch directory (default: a temp dir)"
    )
    p.add_argument("--keep", action="store_true", help="keep the scratch directory")
    p.add_argument("--no-mpi", action="store_true", help="skip the mpiexec workloads")
    p.add_argument("--mpiexec", default=None, help="mpiexec to use (default: found)")
    p.add_argument("--timeout", type=float, default=None, help="per subprocess, seconds")
    p.add_argument(
        "--profile",
        metavar="DIR",
        default=None,
        help="write a cProfile of each workload to DIR/<workload>.prof (combine with "
        "--engines store to see one engine; subprocess workloads are not profiled)",
    )
    for field in dataclasses.fields(PRESETS["default"]):
        flag = "--" + field.name.replace("_", "-")
        kind = float if field.type in (float, "float") else int
        p.add_argument(
            flag, type=kind, default=None, help=f"override the preset's {field.name}"
        )
    return p


def _find_mpiexec(given: str | None) -> str | None:
    if given:
        return given
    here = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    if os.path.exists(here):
        return here
    return shutil.which("mpiexec")


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for dist in ("bsb-store", "bsb-core", "bsb-hdf5", "h5py", "numpy", "mpi4py", "mpich"):
        with contextlib.suppress(md.PackageNotFoundError):
            out[dist] = md.version(dist)
    import h5py

    out["hdf5"] = h5py.version.hdf5_version
    return out


def _load() -> list[float] | None:
    """1, 5, 15-minute load averages: other work on the machine skews every number."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    preset = "smoke" if args.smoke else "large" if args.large else "default"
    overrides = {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(PRESETS[preset])
        if getattr(args, f.name) is not None
    }
    sizes = dataclasses.replace(PRESETS[preset], **overrides)
    names = [n.strip() for n in args.engines.split(",") if n.strip()]
    workloads = [w.strip() for w in args.workloads.split(",") if w.strip()]
    unknown = [w for w in workloads if w not in WORKLOADS]
    if unknown:
        raise SystemExit(
            f"Unknown workloads {unknown}; choose from {', '.join(WORKLOADS)}."
        )
    if args.no_mpi and "mpi_append" in workloads:
        workloads.remove("mpi_append")
    backends, notes = backends_mod.resolve(names)
    if not backends:
        raise SystemExit("No engine to benchmark.")

    workdir = tempfile.mkdtemp(prefix="bsb-store-bench-", dir=args.workdir)
    timeout = args.timeout or (300.0 if preset == "smoke" else 7200.0)
    ctx = Context(
        sizes=sizes,
        backends=backends,
        workdir=workdir,
        mpiexec=_find_mpiexec(args.mpiexec),
        timeout=timeout,
    )
    started = time.time()
    load_start = _load()
    command = "python -m benchmarks " + " ".join(sys.argv[1:] if argv is None else argv)
    print(f"{command.strip()}  [{preset} sizes, scratch {workdir}]")
    for note in notes:
        print(f"note: {note}")
    if load_start is not None:
        print(f"load average {load_start} on {os.cpu_count()} CPUs")
    errors = {}
    try:
        for name, b in backends.items():
            print(f"  {name:<10} {b.describe()}")
            b.warm_up(ctx.path("warmup", name))
        for wl in workloads:
            print(f"[{wl}]")
            module = importlib.import_module(f"benchmarks.{wl}")
            t0 = time.perf_counter()
            profiler = None
            if args.profile:
                import cProfile

                os.makedirs(args.profile, exist_ok=True)
                profiler = cProfile.Profile()
                profiler.enable()
            try:
                module.run(ctx)
            except Exception as e:  # report and go on with the other workloads
                errors[wl] = "".join(traceback.format_exception(e))
                print(f"  FAILED: {e!r}", file=sys.stderr)
                traceback.print_exc()
            finally:
                if profiler is not None:
                    profiler.disable()
                    profiler.dump_stats(os.path.join(args.profile, f"{wl}.prof"))
            print(f"  ({time.perf_counter() - t0:.1f} s)")
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)

    print()
    print(report.table(ctx))
    print()
    detail = report.details(ctx)
    if detail:
        print(detail)
        print()
    tgt = report.targets(ctx)
    if tgt:
        caveat = "; not meaningful at this size" if preset == "smoke" else ""
        print(f"Targets ({preset} sizes{caveat}):")
        print(report.format_targets(tgt))
    meta = {
        "command": command.strip(),
        "preset": preset,
        "sizes": sizes.as_dict(),
        "engines": {n: b.describe() for n, b in backends.items()},
        "notes": notes,
        "store_api": (
            "bsb.storage.Storage('store')"
            if "store" in backends
            else "bsb_store core API"
        ),
        "versions": _versions(),
        "host": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "machine": platform.machine(),
        },
        "started": datetime.datetime.fromtimestamp(started).isoformat(timespec="seconds"),
        "load_average": {"start": load_start, "end": _load()},
        "wall_seconds": time.time() - started,
        "errors": errors,
        "rst_table": report.table(ctx, rst=True),
    }
    doc = report.document(ctx, meta)
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(doc, f, indent=1, default=str)
        print(
            f"\nresults: {args.json}  ({time.time() - started:.0f} s; load average "
            f"{meta['load_average']['end']})"
        )
    if errors:
        print(f"{len(errors)} workload(s) failed: {', '.join(errors)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
