"""Random operation plans on a store, and a model of what the store holds after them.

A *plan* is a deterministic list of operations drawn from a seed: a crash worker
executes it in order and reports every call that returned, and the test rebuilds the
same plan, replays the returned prefix on a :class:`Model` and compares the store with
it. Every row written is unique (it carries the index of the operation that wrote it), so
a partial call, a duplicate or a mix of two calls cannot look like a valid state.

Operation kinds (each one public API call, or one write scope):

``append``    ``PlacementSet.append_data`` of 0-6 cells with positions, an additional
              column and (30 %) morphology indices, into one of four chunks
``batch``     2-4 appends inside one ``write_scope`` (committed together at scope exit)
``cconnect``  ``ConnectivitySet.chunk_connect`` of 1-6 connections
``connect``   ``ConnectivitySet.connect`` of 1-6 connections by placement-set cell index
``label``     ``PlacementSet.label`` or ``remove_labels`` on 1-8 cells
``file``      ``FileStore.store(..., overwrite=True)`` of 10 B - 2 MB under one of 3 ids
``morph``     ``MorphologyRepository.save(..., overwrite=True)`` of 1-3000 points
``clear``     ``PlacementSet.clear`` of one chunk
``read``      ``len()`` of the placement set (merges the process's own pending appends)
"""

from __future__ import annotations

import hashlib
import random
from typing import Any

import numpy as np

CHUNKS = ((0, 0, 0), (1, 0, 0), (2, 0, 0), (0, 1, 0))
CHUNK_IDS = (0, 1, 2, 65536)
LABELS = ("a", "b", "c")
FILE_IDS = ("f0", "f1", "f2")
MORPHS = ("m0", "m1")
MORPHOLOGY_NAMES = ("A", "B", "C", "D", "E")
CELLS, CONNS = "cells", "cells_to_cells"

#: Relative weight of each operation kind, per focus of a crash worker.
FOCUS: dict[str, dict[str, int]] = {
    "append": {"append": 20, "batch": 3, "read": 1},
    "connect": {"cconnect": 5, "connect": 4, "append": 2, "read": 1},
    "label": {"label": 6, "append": 3, "read": 1},
    "file": {"file": 8, "append": 1, "read": 1},
    "morphology": {"morph": 8, "append": 1, "read": 1},
    "mixed": {
        "append": 3,
        "batch": 1,
        "cconnect": 2,
        "connect": 1,
        "label": 2,
        "file": 1,
        "morph": 1,
        "clear": 1,
        "read": 1,
    },
}

Op = dict[str, Any]


# ------------------------------------------------------------------------ contents
def positions(i: int, n: int, c: int, part: int = 0) -> np.ndarray:
    """The positions appended by operation ``i``: rows ``[i, part * 100 + row, c]``."""
    return np.column_stack(
        [np.full(n, i), part * 100 + np.arange(n), np.full(n, c)]
    ).astype(float)


def file_content(i: int, size: int) -> str:
    """``size`` characters that only operation ``i`` writes (``<i><i><i>...``)."""
    unit = f"<{i}>"
    return (unit * (size // len(unit) + 1))[:size]


def morphology_arrays(i: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    return np.full((n, 3), float(i)), np.full(n, i + 0.5)


# ----------------------------------------------------------------------------- plan
def plan(seed: int, focus: str, n: int) -> list[Op]:
    """``n`` operations drawn from ``seed`` with the weights of ``focus``."""
    rnd = random.Random(f"{focus}-{seed}")
    kinds, weights = zip(*FOCUS[focus].items())
    model = Model()
    ops = []
    for i in range(n):
        kind = rnd.choices(kinds, weights)[0]
        if kind in ("label", "connect") and not model.size():
            kind = "append"
        op = _draw(kind, i, rnd, model.size())
        model.apply(op)
        ops.append(op)
    return ops


def _draw(kind: str, i: int, rnd: random.Random, cells: int) -> Op:
    op: Op = {"kind": kind, "i": i}
    if kind == "append":
        n = 0 if rnd.random() < 0.05 else rnd.randint(1, 6)
        op.update(c=rnd.randrange(4), n=n)
        if rnd.random() < 0.3:  # with morphologies: indices into new or known names
            names = rnd.sample(MORPHOLOGY_NAMES, rnd.randint(1, 3))
            op["m"] = ([rnd.randrange(-1, len(names)) for _ in range(n)], names)
    elif kind == "batch":
        op["parts"] = [
            (rnd.randrange(4), rnd.randint(1, 5)) for _ in range(rnd.randint(2, 4))
        ]
    elif kind == "cconnect":
        op.update(s=rnd.randrange(4), d=rnd.randrange(4), n=rnd.randint(1, 6))
    elif kind == "connect":
        k = rnd.randint(1, 6)
        op.update(
            src=[rnd.randrange(cells) for _ in range(k)],
            dst=[rnd.randrange(cells) for _ in range(k)],
        )
    elif kind == "label":
        op.update(
            labels=rnd.sample(LABELS, rnd.randint(1, 2)),
            cells=sorted(rnd.sample(range(cells), rnd.randint(1, min(cells, 8)))),
            add=rnd.random() < 0.75,
        )
    elif kind == "file":
        op.update(id=rnd.choice(FILE_IDS), size=int(10 ** rnd.uniform(1, 6.3)))
    elif kind == "morph":
        op.update(name=rnd.choice(MORPHS), n=rnd.randint(1, 3000))
    elif kind == "clear":
        op["c"] = rnd.randrange(4)
    return op


# ---------------------------------------------------------------------------- model
class Model:
    """What a store holds after a sequence of operations (numpy-free bookkeeping)."""

    def __init__(self) -> None:
        self.chunks: dict[int, list[list[Any]]] = {}  # cells [pos, op, labels, morph]
        self.blocks: dict[tuple[int, int], list[tuple[tuple, tuple]]] = {}
        self.files: dict[str, str] = {}
        self.morphs: dict[str, tuple[int, int]] = {}

    def size(self) -> int:
        return sum(map(len, self.chunks.values()))

    def cells(self) -> list[tuple[int, int, list[Any]]]:
        """(chunk id, index in chunk, cell) in BSB's global order."""
        return [
            (cid, j, cell)
            for cid in sorted(self.chunks)
            for j, cell in enumerate(self.chunks[cid])
        ]

    def apply(self, op: Op) -> None:
        getattr(self, "_" + op["kind"])(op)

    def _append(self, op: Op, part: int = 0, c: int | None = None, n: int | None = None):
        c, n = (op["c"], op["n"]) if c is None else (c, n)
        rows = positions(op["i"], n, c, part)
        indices, names = op.get("m") or ([-1] * n, [])
        morphs = [names[k] if k >= 0 else None for k in indices]
        cells = self.chunks.setdefault(CHUNK_IDS[c], [])
        cells.extend(
            [tuple(r), float(op["i"]), frozenset(), m]
            for r, m in zip(rows.tolist(), morphs)
        )

    def _batch(self, op: Op) -> None:
        for j, (c, n) in enumerate(op["parts"]):
            self._append(op, j, c, n)

    def _cconnect(self, op: Op) -> None:
        i = op["i"]
        rows = self.blocks.setdefault((CHUNK_IDS[op["s"]], CHUNK_IDS[op["d"]]), [])
        rows.extend(((i, r, 0), (r, i, 1)) for r in range(op["n"]))

    def _connect(self, op: Op) -> None:
        order = self.cells()
        per_block: dict[tuple[int, int], list[tuple[tuple, tuple]]] = {}
        for r, (s, t) in enumerate(zip(op["src"], op["dst"])):
            (sc, sj, _), (tc, tj, _) = order[s], order[t]
            per_block.setdefault((sc, tc), []).append(((sj, op["i"], -1), (tj, -1, r)))
        single = len(self.chunks) == 1  # the presynaptic view is one chunk:
        for key in sorted(per_block):
            rows = per_block[key]
            if single:  # BSB's order, (postsynaptic cell, presynaptic cell), stable
                rows = sorted(rows, key=lambda row: (row[1][0], row[0][0]))
            self.blocks.setdefault(key, []).extend(rows)

    def _label(self, op: Op) -> None:
        order = self.cells()
        change = frozenset(op["labels"])
        for g in op["cells"]:
            cell = order[g][2]
            cell[2] = cell[2] | change if op["add"] else cell[2] - change

    def _file(self, op: Op) -> None:
        self.files[op["id"]] = file_content(op["i"], op["size"])

    def _morph(self, op: Op) -> None:
        self.morphs[op["name"]] = (op["i"], op["n"])

    def _clear(self, op: Op) -> None:
        self.chunks.pop(CHUNK_IDS[op["c"]], None)

    def _read(self, op: Op) -> None:
        pass

    def state(self) -> dict[str, Any]:
        """The canonical state (the shape :func:`observe` reads from a store)."""
        order = self.cells()
        return {
            "chunks": {cid: len(cells) for cid, cells in sorted(self.chunks.items())},
            "positions": np.asarray([c[0] for _, _, c in order], float).reshape(-1, 3),
            "op": np.asarray([c[1] for _, _, c in order], float),
            "morphology": [c[3] for _, _, c in order],
            "labels": {
                lab: np.asarray([lab in c[2] for _, _, c in order], bool)
                for lab in LABELS
            },
            "blocks": {
                key: (
                    np.asarray([r[0] for r in rows], np.int64).reshape(-1, 3),
                    np.asarray([r[1] for r in rows], np.int64).reshape(-1, 3),
                )
                for key, rows in sorted(self.blocks.items())
                if rows
            },
            "files": dict(sorted(self.files.items())),
            "morphs": dict(sorted(self.morphs.items())),
        }


def states_after(ops: list[Op], k: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """The states after the first ``k`` operations and after ``k + 1`` of them."""
    model = Model()
    for op in ops[:k]:
        model.apply(op)
    before = model.state()
    if k < len(ops):
        model.apply(ops[k])
    return before, model.state()


# -------------------------------------------------------------------------- observe
def observe(engine) -> dict[str, Any]:
    """Read the state of a store in the shape of :meth:`Model.state`, checking on the
    way what must hold whatever the state (columns line up, ``inc`` mirrors ``out``,
    file checksums, whole morphologies)."""
    from bsb_store.core import ConnectivitySet, PlacementSet

    ps = PlacementSet(engine, CELLS)
    cs = ConnectivitySet(engine, CONNS)
    pos = ps.load_positions()
    op = ps.load_additional("op") if len(pos) else np.empty(0)
    assert len(op) == len(pos), f"columns do not line up: {len(op)} != {len(pos)}"
    blocks = {
        (lc.id, gc.id): (loc, glob)
        for _, lc, gc, (loc, glob) in cs.flat_iter_connections("out")
        if len(loc)
    }
    inc = {
        (gc.id, lc.id): (glob, loc)
        for _, lc, gc, (loc, glob) in cs.flat_iter_connections("inc")
        if len(loc)
    }
    assert _same(inc, blocks), "the inc blocks do not mirror the out blocks"
    files = {}
    for fid, meta in sorted(engine.files.all().items()):
        content, _ = engine.files.load(fid)
        digest = hashlib.sha256(content.encode()).hexdigest()
        assert meta["content_sha256"] == digest, f"file {fid}: checksum mismatch"
        files[fid] = content
    morphs = {}
    for name in engine.morphologies.list():
        m = engine.morphologies.load(name)
        value = m.points[0, 0] if len(m) else -1
        assert np.all(m.points == value) and np.all(m.radii == value + 0.5), name
        morphs[name] = (int(value), len(m))
    morphology = [None] * len(pos)
    if ps.has_column("morphology"):
        idx, names = ps.load_morphology_indices()
        morphology = [names[k] if k >= 0 else None for k in idx.tolist()]
    return {
        "chunks": {int(k): v for k, v in ps.get_chunk_stats().items()},
        "positions": pos,
        "op": op,
        "morphology": morphology,
        "labels": {lab: ps.get_label_mask([lab]) for lab in LABELS},
        "blocks": blocks,
        "files": files,
        "morphs": morphs,
    }


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, tuple) and isinstance(b, tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        a, b = np.asarray(a), np.asarray(b)
        return a.shape == b.shape and bool(np.array_equal(a, b))
    return a == b


def differences(actual: dict[str, Any], expected: dict[str, Any]) -> list[str]:
    """The parts of two states that differ (empty when they are equal)."""
    out = []
    for key in expected:
        if not _same(actual[key], expected[key]):
            a, e = actual[key], expected[key]
            if isinstance(e, dict):
                keys = sorted(set(a) | set(e), key=str)
                bad = [
                    k for k in keys if k not in a or k not in e or not _same(a[k], e[k])
                ]
                out.append(f"{key}: differ at {bad[:5]}")
            else:
                out.append(f"{key}: {np.shape(a)} vs expected {np.shape(e)}")
    return out


def matching(actual: dict[str, Any], ops: list[Op], k: int) -> str:
    """Which state the store holds: ``"returned"`` (exactly the ``k`` returned calls),
    ``"in-flight"`` (those plus the call in flight, whole), ``"either"`` when the two
    are the same; raises AssertionError naming the differences otherwise."""
    before, after = states_after(ops, k)
    same_before = not differences(actual, before)
    same_after = not differences(actual, after)
    if same_before and same_after:
        return "either"
    if same_before:
        return "returned"
    if same_after:
        return "in-flight"
    raise AssertionError(
        f"the store holds neither the {k} returned calls nor those plus call {k} "
        f"({ops[k]['kind'] if k < len(ops) else 'none'}): vs returned "
        f"{differences(actual, before)}; vs in-flight {differences(actual, after)}"
    )
