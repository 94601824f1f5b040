"""What the subcommands share: exit codes and output helpers."""

from __future__ import annotations

import json
import sys
from typing import Any

from ..core.maintenance import Finding

EXIT_OK = 0
EXIT_PROBLEMS = 1
EXIT_USAGE = 2
EXIT_FAILED = 3
EXIT_PIPE = 141  # 128 + SIGPIPE: stdout's reader closed the pipe early


def emit_json(data: Any) -> None:
    """Print ``data`` as indented JSON to stdout."""
    print(json.dumps(data, indent=2, default=str))


def out(text: str = "") -> None:
    print(text, file=sys.stdout)


def fmt_bytes(n: float) -> str:
    """``1536`` -> ``'1.5 KiB'``."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def plural(n: int, word: str, many: str | None = None) -> str:
    """``plural(2, "cell")`` -> ``'2 cells'``."""
    return f"{n} {word if n == 1 else (many or word + 's')}"


def print_findings(title: str, findings: list[Finding]) -> None:
    """A titled list of findings, one per line: ``- [code] path: message``."""
    if findings:
        out(f"{title}:")
        for f in findings:
            out(f"  - [{f.code}] {f.path}: {f.message}")


def fail(args: Any, error: BaseException, code: int) -> int:
    """Report ``error`` of command ``args.command`` on stderr (and as JSON with
    ``--json``); returns the exit code ``code``."""
    print(f"bsb-store {args.command}: error: {error}", file=sys.stderr)
    if args.json:
        emit_json(
            {
                "root": args.root,
                "ok": False,
                "error": str(error),
                "error_type": type(error).__name__,
                "exit_code": code,
            }
        )
    return code
