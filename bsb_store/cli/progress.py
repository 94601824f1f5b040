"""Progress reporting for long maintenance work.

:func:`make_progress` returns a :data:`~bsb_store.core.maintenance.ProgressFn`: a
function that wraps an iterable. It draws a `tqdm <https://tqdm.github.io>`_ bar on
standard error when tqdm is installed (the ``progress`` extra) and standard error is a
terminal; otherwise, and with ``--no-progress``, it returns the iterable unchanged, so
nothing is printed into logs or pipes.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any, TextIO

from ..core.maintenance import ProgressFn


def quiet(items: Iterable[Any], desc: str, total: int | None) -> Iterable[Any]:
    """No progress output: the iterable itself."""
    return items


def make_progress(
    enabled: bool | None = None, stream: TextIO | None = None
) -> ProgressFn:
    """A progress wrapper writing to ``stream`` (standard error by default).

    :param enabled: ``True`` or ``False`` to force it on or off; ``None`` (default):
        on when ``stream`` is a terminal.
    """
    out = sys.stderr if stream is None else stream
    if enabled is None:
        enabled = bool(getattr(out, "isatty", lambda: False)())
    if not enabled:
        return quiet
    try:
        from tqdm import tqdm
    except ImportError:
        return quiet

    def bar(items: Iterable[Any], desc: str, total: int | None) -> Iterable[Any]:
        return tqdm(items, desc=desc, total=total, file=out, leave=False, unit="it")

    return bar
