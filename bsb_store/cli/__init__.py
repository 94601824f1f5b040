"""The ``bsb-store`` command line: ``check``, ``repair``, ``info``, ``ls`` and
``compact``.

Each subcommand lives in its own module (``add_parser`` + ``run``) and is a thin layer
over :mod:`bsb_store.core.maintenance`. Exit codes (also in ``docs/cli.rst``):

* ``0``: OK (``check``: no errors, warnings allowed; ``repair``: the store now passes
  ``check``, or there was nothing to do);
* ``1``: problems found (``check`` found errors, parts of a damaged file that cannot be
  read included; ``repair`` left errors it cannot fix; ``info`` or ``ls`` could not
  read parts of the store; ``compact`` refused because the store has errors);
* ``2``: usage error, or the path is not a bsb-store file (missing, empty, foreign,
  truncated, a bsb-hdf5 network, or a newer format version), or the output of
  ``compact`` exists, or the ``PATH`` of ``ls`` is not in the store;
* ``3``: the command could not run to the end (a lock held by another process past its
  timeout, a file system without working locks, a write to a read-only store, an I/O
  error, or an unexpected internal error).
* ``141`` (128 + SIGPIPE, what a shell reports for ``cat`` in ``cat f | head``): the
  reader of standard output went away before the output ended; nothing is printed.

No command ends in a Python traceback: an unexpected error is one line on standard
error (``BSB_STORE_TRACEBACK=1`` prints the traceback too) and exit code 3.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import traceback
from collections.abc import Sequence

from .. import __version__
from ..exceptions import (
    FormatVersionError,
    LockTimeoutError,
    NotAStoreError,
    StoreError,
    StoreExistsError,
    StoreNotFoundError,
)
from . import check, compact, info, ls, repair
from ._output import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_PIPE,
    EXIT_PROBLEMS,
    EXIT_USAGE,
    fail,
)
from .progress import make_progress

_COMMANDS = (check, repair, info, ls, compact)
_REFUSED = (NotAStoreError, StoreNotFoundError, FormatVersionError, StoreExistsError)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``bsb-store`` with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="bsb-store",
        description="Inspect and maintain bsb-store HDF5 stores.",
        epilog="Exit codes: 0 ok, 1 problems found (damaged parts included), 2 usage "
        "error or not a store, 3 could not complete (lock timeout, no working locks, "
        "read-only store, I/O error).",
    )
    parser.add_argument("--version", action="version", version=f"bsb-store {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("root", metavar="ROOT", help="the store's root .h5 file")
    common.add_argument("--json", action="store_true", help="print JSON to stdout")
    common.add_argument(
        "--locking",
        choices=("flock", "none"),
        default=None,
        help="inter-process locking (default: BSB_STORE_LOCKING or flock)",
    )
    common.add_argument(
        "--no-progress", action="store_true", help="never draw progress bars"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in _COMMANDS:
        module.add_parser(sub, [common])
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``bsb-store`` with ``argv`` (default: ``sys.argv[1:]``); the exit code."""
    try:
        code = _main(argv)
        sys.stdout.flush()  # here, not at exit: a closed pipe must not print at exit
        return code
    except BrokenPipeError:
        # `bsb-store info ROOT | head -3`: the reader has what it wanted. The standard
        # way (Python's signal docs, "Note on SIGPIPE"): point stdout at devnull so
        # the interpreter's own flush at exit does not fail again, and exit quietly.
        with contextlib.suppress(OSError, ValueError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        return EXIT_PIPE


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, --version (0) and usage errors (2)
        return e.code if isinstance(e.code, int) else EXIT_USAGE
    if args.command is None:
        parser.print_usage(sys.stderr)
        print("bsb-store: error: a command is required", file=sys.stderr)
        return EXIT_USAGE
    args.progress = make_progress(False if args.no_progress or args.json else None)
    try:
        return int(args.run(args))
    except BrokenPipeError:
        raise
    except _REFUSED as e:
        return fail(args, e, EXIT_USAGE)
    except LockTimeoutError as e:
        return fail(args, e, EXIT_FAILED)
    except (StoreError, OSError) as e:
        return fail(args, e, EXIT_FAILED)
    except KeyboardInterrupt:
        print(f"bsb-store {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # a bug, or damage no check foresaw: never a traceback
        if os.environ.get("BSB_STORE_TRACEBACK"):
            traceback.print_exc()
        return fail(
            args,
            RuntimeError(
                f"unexpected {type(e).__name__}: {e} (please report it; "
                "BSB_STORE_TRACEBACK=1 shows where)"
            ),
            EXIT_FAILED,
        )


__all__ = [
    "EXIT_FAILED",
    "EXIT_OK",
    "EXIT_PIPE",
    "EXIT_PROBLEMS",
    "EXIT_USAGE",
    "build_parser",
    "main",
]
