"""``bsb-store compact ROOT [OUT]``: rewrite a store without garbage or free space."""

from __future__ import annotations

import argparse
from typing import Any

from ..core import maintenance
from ._output import EXIT_OK, EXIT_PROBLEMS, emit_json, fmt_bytes, out, print_findings

DESCRIPTION = """\
Rewrite the store into a fresh file holding only what readers can reach: pending shard
data is merged first, then every set's indexed chunks and registered columns (cut to
their counts), morphologies, files and metadata are copied; rows past the counts,
unreachable leftovers and HDF5 free space are dropped. The new file replaces ROOT
atomically (or is written to OUT, which must not exist) under the store's exclusive
lock. Refused (exit 1) while `check` reports errors. Never makes a file bigger: when
the rewrite would not be smaller, ROOT is kept as it is (or copied as it is to OUT)."""


def add_parser(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    """Register the subcommand."""
    p = sub.add_parser(
        "compact",
        parents=parents,
        help="rewrite a store, reclaiming space",
        description=DESCRIPTION,
    )
    p.add_argument("out", metavar="OUT", nargs="?", help="write here instead of ROOT")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Compact ``args.root`` (into ``args.out``) and print the sizes."""
    report = maintenance.compact(
        args.root, args.out, locking=args.locking, progress=args.progress
    )
    code = EXIT_PROBLEMS if report.refused else EXIT_OK
    if args.json:
        emit_json(report.to_dict())
        return code
    if report.refused:
        out(f"Not compacted: {report.refused}.")
        print_findings("Errors", report.errors)
        return code
    for action in report.merged:
        out(f"  - {action}")
    before, after = report.bytes_before, report.bytes_after
    if report.kept:
        where = "kept as it is" if report.target == report.root else "copied as it is"
        out(
            f"Not rewritten: a compacted {report.root} would not be smaller than its "
            f"{fmt_bytes(after)}; {where}"
            + ("." if report.target == report.root else f" to {report.target}.")
        )
        return code
    saved = before - after
    pct = 100 * saved / before if before else 0.0
    out(
        f"Compacted {report.root} -> {report.target}: {fmt_bytes(before)} -> "
        f"{fmt_bytes(after)} (saved {fmt_bytes(saved)}, {pct:.0f}%)."
    )
    return code
