"""``bsb-store ls ROOT [PATH]``: list what a store holds, with sizes (as ``h5ls``)."""

from __future__ import annotations

import argparse
from typing import Any

from ..core.maintenance._ls import ls
from ..exceptions import DatasetNotFoundError
from ._output import (
    EXIT_OK,
    EXIT_PROBLEMS,
    EXIT_USAGE,
    emit_json,
    fail,
    fmt_bytes,
    out,
    plural,
)

DESCRIPTION = """\
List what a store holds, with sizes, without reading data (as h5ls does for any HDF5
file). Without PATH: the top-level groups (placement sets, connectivity sets,
morphologies, files, engine metadata) with their counts and sizes. PATH may be
`placement` or `connectivity` (the sets), a set (`placement/NAME`: its chunks as
coordinates with cell counts; `connectivity/NAME`: its blocks, presynaptic ->
postsynaptic chunk, with connection counts), a chunk (`placement/NAME/0,1,0` or its id:
its datasets), `morphologies`, `files`, or any other HDF5 path (its members with dtype,
shape and allocated bytes). Sizes of sets, chunks and blocks are the bytes of data their
index reaches; of other datasets, the bytes HDF5 allocated. With -r, every listed entry
that holds more is listed below it, down to the chunks and blocks of the sets."""


def add_parser(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    """Register the subcommand."""
    p = sub.add_parser(
        "ls",
        parents=parents,
        help="list sets, chunks and objects with sizes",
        description=DESCRIPTION,
    )
    p.add_argument("path", metavar="PATH", nargs="?", default="", help="what to list")
    p.add_argument(
        "-r", "--recursive", action="store_true", help="list what each entry holds"
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Print the listing of ``args.path`` in ``args.root``."""
    try:
        data = ls(args.root, args.path, locking=args.locking, recursive=args.recursive)
    except DatasetNotFoundError as e:
        return fail(args, e, EXIT_USAGE)
    if args.json:
        emit_json(data)
    else:
        print_listing(data)
    return EXIT_PROBLEMS if data["damaged"] else EXIT_OK


def print_listing(d: dict[str, Any]) -> None:
    """One line per entry: name, what it holds, size; nested entries indented."""
    rows: list[tuple[str, str, str]] = []
    _rows(d["entries"], 0, rows)
    if not rows:
        out(f"{d['path']}: empty {d['kind']}")
    width = max((len(r[0]) for r in rows), default=0)
    what = max((len(r[1]) for r in rows), default=0)
    for name, desc, size in rows:
        out(f"{name:<{width}}  {desc:<{what}}  {size:>10}".rstrip())
    for line in d["damaged"]:
        out(f"{line}")


def _rows(entries: list[dict[str, Any]], depth: int, rows: list) -> None:
    for e in entries:
        name = "  " * depth + e["name"] + ("/" if e.get("listable") else "")
        size = "" if e.get("bytes") is None else fmt_bytes(e["bytes"])
        rows.append((name, describe(e), size))
        if "entries" in e:
            _rows(e["entries"], depth + 1, rows)


def describe(e: dict[str, Any]) -> str:
    """What an entry holds, in words."""
    kind = e["kind"]
    if kind in ("placement sets", "connectivity sets"):
        count = "cell" if kind == "placement sets" else "connection"
        noun = kind[:-1]
        return (
            f"{plural(e['count'], noun)}, {plural(e[count + 's'], count)}"
            if e["count"]
            else f"no {kind}"
        )
    if kind == "morphologies":
        return f"{plural(e['count'], 'morphology', 'morphologies')}, " + plural(
            e["points"], "point"
        )
    if kind == "files":
        return plural(e["count"], "file")
    if kind == "engine metadata":
        return "engine metadata (state, chunk size, shard records)"
    if kind == "placement set":
        return (
            f"placement set, {plural(e['cells'], 'cell')} in "
            f"{plural(e['chunks'], 'chunk')}"
        )
    if kind == "connectivity set":
        return (
            f"connectivity set {e['pre']} -> {e['post']}, "
            f"{plural(e['connections'], 'connection')} in {plural(e['blocks'], 'block')}"
        )
    if kind == "chunk":
        return f"chunk {e['id']}, {plural(e['cells'], 'cell')}"
    if kind == "block":
        return f"block, {plural(e['connections'], 'connection')}"
    if kind == "morphology":
        return (
            f"morphology, {plural(e['points'], 'point')}, "
            f"{plural(e['branches'], 'branch', 'branches')}"
        )
    if kind == "file":
        return "file" + (" (active configuration)" if e.get("active_config") else "")
    if kind == "dataset":
        shape = "scalar" if not e["shape"] else " x ".join(map(str, e["shape"]))
        return f"dataset {e['dtype']}, {shape}"
    if kind == "group":
        return f"group, {plural(e['count'], 'member')}"
    return kind
