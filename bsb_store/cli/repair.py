"""``bsb-store repair ROOT``: recover what a crash left, and say what was done."""

from __future__ import annotations

import argparse
from typing import Any

from ..core import maintenance
from ._output import EXIT_OK, EXIT_PROBLEMS, emit_json, out, plural, print_findings

DESCRIPTION = """\
Recover what a crash left: redo a complete (or discard an incomplete) interrupted
transaction, drop staged leftovers, merge every committed append call that is still
only in a shard (removing the shards of dead writers, and their uncommitted tails with
them), remove leftover lock and compaction files. Lost data (missing or short datasets)
cannot be repaired and is reported; a damaged file (parts HDF5 cannot read) is never
written. Idempotent: a second run does nothing. Exit 0 when the store then passes
`check`, 1 when errors remain."""


def add_parser(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    """Register the subcommand."""
    p = sub.add_parser(
        "repair",
        parents=parents,
        help="recover from crashes (journal, staging, shards)",
        description=DESCRIPTION,
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Repair ``args.root`` and print what was done."""
    report = maintenance.repair(args.root, locking=args.locking, progress=args.progress)
    code = EXIT_OK if report.ok else EXIT_PROBLEMS
    if args.json:
        emit_json(report.to_dict())
        return code
    if report.changed:
        out(f"Repaired {report.root}:")
        for action in report.actions:
            out(f"  - {action}")
    elif report.refused is None:
        out(f"Nothing to repair in {report.root}.")
    if report.refused is not None:
        out(f"Not repaired: {report.refused}.")
    errors = report.after.errors
    if errors:
        out(f"{plural(len(errors), 'error')} remain that repair cannot fix:")
        print_findings("Errors", errors)
    elif report.changed:
        out("The store now passes `bsb-store check`.")
    return code
