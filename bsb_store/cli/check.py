"""``bsb-store check ROOT``: verify a store without changing it."""

from __future__ import annotations

import argparse
from typing import Any

from ..core import maintenance
from ._output import EXIT_OK, EXIT_PROBLEMS, emit_json, out, plural, print_findings

DESCRIPTION = """\
Verify a store without changing it: the root's structure and format version; every
set's index against its data (chunk groups, column datasets and their lengths, the
columns registry, morphology indices, label-set ids, inc/out mirroring of connections);
interrupted transactions and staged leftovers; the shards of live and dead writers
next to the root (committed calls not merged yet, uncommitted tails); leftover files.
Errors make the exit code 1; warnings (harmless, e.g. space only `compact` reclaims,
unmerged data of a live writer) are listed but keep it 0."""


def add_parser(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    """Register the subcommand."""
    p = sub.add_parser(
        "check",
        parents=parents,
        help="verify a store (exit 1 on errors)",
        description=DESCRIPTION,
    )
    p.set_defaults(run=run)


def summary_line(summary: dict[str, Any]) -> str:
    """One line saying what the checked store holds."""
    place, conn = summary["placement"], summary["connectivity"]
    cells = sum(s["cells"] for s in place.values())
    chunks = sum(s["chunks"] for s in place.values())
    conns = sum(s["connections"] for s in conn.values())
    shards = summary["shards"]
    pending = (
        f"{plural(shards['pending_calls'], 'append call')} pending in "
        f"{plural(shards['total'], 'shard')}"
        if shards["total"]
        else "no pending shard data"
    )
    return (
        f"{plural(len(place), 'placement set')} ({plural(cells, 'cell')} in "
        f"{plural(chunks, 'chunk')}), {plural(len(conn), 'connectivity set')} "
        f"({plural(conns, 'connection')}), "
        f"{plural(summary['morphologies'], 'morphology', 'morphologies')}, "
        f"{plural(summary['files'], 'file')}; {pending}"
    )


def run(args: argparse.Namespace) -> int:
    """Check ``args.root`` and print the report."""
    report = maintenance.check(args.root, locking=args.locking, progress=args.progress)
    if args.json:
        emit_json(report.to_dict())
        return EXIT_OK if report.ok else EXIT_PROBLEMS
    errors, warnings = report.errors, report.warnings
    if report.ok:
        extra = f" with {plural(len(warnings), 'warning')}" if warnings else ""
        out(f"OK{extra}: {report.root}")
    else:
        out(
            f"FAILED: {plural(len(errors), 'error')}, "
            f"{plural(len(warnings), 'warning')} in {report.root}"
        )
    out(f"  {summary_line(report.summary)}")
    print_findings("Errors", errors)
    print_findings("Warnings", warnings)
    fixable = [f for f in errors if f.repairable]
    if fixable:
        out(
            f"`bsb-store repair {report.root}` fixes "
            f"{plural(len(fixable), 'error')} of {len(errors)}."
        )
    return EXIT_OK if report.ok else EXIT_PROBLEMS
