"""``bsb-store info ROOT``: summarise what a store holds."""

from __future__ import annotations

import argparse
from typing import Any

from ..core import maintenance
from ._output import EXIT_OK, EXIT_PROBLEMS, emit_json, fmt_bytes, out, plural

DESCRIPTION = """\
Summarise a store without changing it: placement sets (cells, chunks and their
coordinate range, columns with their types, labels with their cell counts, morphology
names, the spatial extent of the positions), connectivity sets (connections, blocks,
pre- and postsynaptic types, columns), morphologies (with their names),
files, the chunk size, the file size against the bytes of data it holds, provenance
(storage id, state id, creation time, writer versions) and shard data not merged yet.
Parts that cannot be read (a damaged file) are listed as damaged; the exit code is then 1.
The extent reads every set's positions (chunk by chunk, in bounded memory); `bsb-store
ls` lists what a store holds without reading data."""


def add_parser(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    """Register the subcommand."""
    p = sub.add_parser(
        "info", parents=parents, help="summarise a store", description=DESCRIPTION
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Print the summary of ``args.root``."""
    data = maintenance.info(args.root, locking=args.locking, progress=args.progress)
    if args.json:
        emit_json(data)
    else:
        print_info(data)
    return EXIT_PROBLEMS if data.get("damaged") else EXIT_OK


def print_info(d: dict[str, Any]) -> None:
    """The human-readable summary."""
    prov, sizes = d["provenance"], d["sizes"]
    ratio = sizes["file_bytes"] / sizes["data_bytes"] if sizes["data_bytes"] else None
    out(d["root"])
    out(f"  format        {d['format']['name']} {d['format']['version']}")
    out(f"  storage id    {prov['storage_id']}")
    out(f"  state id      {prov['state_id']}")
    out(f"  created at    {prov['created_at']}")
    out(
        f"  written by    {prov['written_by']} (bsb-store {prov['created_with']}, "
        f"engine {prov['engine_version']})"
    )
    size = d["chunk_size"]
    out(f"  chunk size    {'unset' if size is None else ' x '.join(map(str, size))}")
    out(
        f"  size          {fmt_bytes(sizes['file_bytes'])} on disk, "
        f"{fmt_bytes(sizes['data_bytes'])} of data"
        + (f" ({ratio:.2f}x)" if ratio is not None else "")
    )
    _print_sets(d)
    m, f = d["morphologies"], d["files"]
    out(
        f"  morphologies  {m['count']} ({plural(m['points'], 'point')})"
        + (f": {fmt_list(m['names'])}" if m.get("names") else "")
    )
    active = f", active config '{f['active_config']}'" if f["active_config"] else ""
    out(f"  files         {f['count']} ({fmt_bytes(f['bytes'])}{active})")
    p = d["pending"]
    out(
        f"  pending       {plural(p['calls'], 'append call')} in "
        f"{plural(p['shards'], 'shard')} ({p['live_writers']} live, "
        f"{p['dead_writers']} dead writers)"
        if p["shards"]
        else "  pending       none"
    )
    if p.get("missing"):
        out(f"  missing       {p['missing']}")
    if d["interrupted_transaction"]:
        out("  transaction   interrupted: run `bsb-store repair`")
    if d.get("interrupted_session"):
        out(
            "  session       a dead writer's session is rolled back at the next open "
            "(or `bsb-store repair`); shown as rolled back"
        )
    if d.get("damaged"):
        out(f"  damaged       {plural(len(d['damaged']), 'part')} cannot be read:")
        for line in d["damaged"]:
            out(f"    - {line}")


def _print_sets(d: dict[str, Any]) -> None:
    out(f"  placement sets ({len(d['placement'])}):")
    for name, s in d["placement"].items():
        if s.get("damaged"):
            out(f"    {name}: damaged (run `bsb-store check`)")
            continue
        out(
            f"    {name}: {plural(s['cells'], 'cell')} in {plural(s['chunks'], 'chunk')}"
            f"; columns: {', '.join(s['columns']) or 'none'}; "
            f"{plural(s['morphology_names'], 'morphology name')}"
        )
        _print_set_details(s)
    out(f"  connectivity sets ({len(d['connectivity'])}):")
    for name, s in d["connectivity"].items():
        if s.get("damaged"):
            out(f"    {name}: damaged (run `bsb-store check`)")
            continue
        out(
            f"    {name} ({s['pre']} -> {s['post']}): "
            f"{plural(s['connections'], 'connection')} in {plural(s['blocks'], 'block')}"
        )
        _print_set_details(s)


def fmt_range(r: dict[str, list[Any]] | None, fmt: str = "{}") -> str:
    """``{"min": [0, 0, 0], "max": [1, 2, 0]}`` -> ``'(0, 0, 0) .. (1, 2, 0)'``."""
    if r is None:
        return "none"
    lo, hi = (", ".join(fmt.format(v) for v in r[k]) for k in ("min", "max"))
    return f"({lo})" if lo == hi else f"({lo}) .. ({hi})"


def fmt_type(t: dict[str, Any]) -> str:
    """``{"dtype": "float64", "shape": [3]}`` -> ``'float64[3]'``."""
    shape = t.get("shape") or []
    return t["dtype"] + (f"[{', '.join(map(str, shape))}]" if shape else "")


def _print_set_details(s: dict[str, Any]) -> None:
    """The indented detail lines of one set (keys that are absent are skipped)."""
    if "chunk_range" in s:
        out(f"      chunks      {fmt_range(s['chunk_range'])}")
    if "extent" in s:
        out(f"      extent      {fmt_range(s['extent'], '{:g}')}")
    if s.get("column_types"):
        types = ", ".join(f"{n} {fmt_type(t)}" for n, t in s["column_types"].items())
        out(f"      types       {types}")
    if "labels" in s:
        labels = fmt_list([f"{k} ({v})" for k, v in s["labels"].items()])
        out(f"      labels      {labels or 'none'}")
    if s.get("morphologies_used"):
        out(f"      morphologies {fmt_list(s['morphologies_used'])}")


#: Names printed per list in text mode (``--json`` has them all).
_SHOWN = 20


def fmt_list(names: list[str]) -> str:
    """``a, b, c``; past ``_SHOWN`` names, ``..., and N more (--json lists all)``."""
    shown = ", ".join(names[:_SHOWN])
    more = len(names) - _SHOWN
    return shown + (f", and {more} more (--json lists all)" if more > 0 else "")
