"""Maintenance of a store root: check, repair, info and compact.

These are plain functions over a root path (the ``bsb-store`` command line is a thin
layer over them). They use the engine's locks exactly like the engine does:

* :func:`check` and :func:`info` only read. They hold the *shared* root lock, open the
  root read-only and never merge shard data or redo a journal, so what they report is
  the state a crash left. Shards are read under each shard's own shared lock, up to
  their commit record.
* :func:`repair` holds the *exclusive* root lock and does what the engine does on its
  next write, and says what it did: redo or discard an interrupted journal, drop
  staged leftovers, merge every committed shard call the root does not hold (removing
  the shards of dead writers, their uncommitted tails with them), and remove leftover
  files of crashed writers and compactions. Data that is lost (a missing chunk group, a
  column shorter than its count) is reported, never invented or silently dropped.
* :func:`compact` merges pending data, then writes the data readers can reach (index
  counts, registered columns, everything else copied as-is) into a fresh file next to
  the target and atomically renames it into place, all under the exclusive lock.

What counts as an *error* (exit 1 in the command line) and what as a *warning*: an
error is something a reader of the root file gets wrong or refuses (an interrupted
journal, lost or inconsistent data, committed calls of a dead writer that only exist in
its shard); a warning is harmless but worth knowing (unmerged data of a live writer,
bytes that only compaction reclaims, leftovers that ``repair`` removes).
"""

from __future__ import annotations

from ._check import check
from ._common import CheckReport, CompactReport, Finding, ProgressFn, RepairReport
from ._compact import compact
from ._info import info
from ._repair import repair

__all__ = [
    "CheckReport",
    "CompactReport",
    "Finding",
    "ProgressFn",
    "RepairReport",
    "check",
    "compact",
    "info",
    "repair",
]
