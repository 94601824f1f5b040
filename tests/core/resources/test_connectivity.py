"""ConnectivitySet: blocks in both directions, BSB iteration order, connect() demux,
clears, failure paths, bounded reads and concurrent writers.

Expected results come from a plain numpy/dict model of the connections.
"""

from __future__ import annotations

import multiprocessing
from collections import defaultdict
from typing import Any

import h5py
import numpy as np
import pytest

from bsb_store.core import Chunk, HDF5Engine, PlacementSet
from bsb_store.core.resources import connectivity as conn
from bsb_store.core.resources.connectivity import ConnectivitySet
from bsb_store.core.writes.txn import Transaction
from bsb_store.exceptions import (
    ChunkSizeError,
    DatasetExistsError,
    DatasetNotFoundError,
    DtypeError,
    InvalidInputError,
    LocationOutOfBoundsError,
    ShapeError,
    TypeMismatchError,
)

pytestmark = pytest.mark.serial_only

A, B, C, D = (0, 0, 0), (1, 0, 0), (0, 1, 0), (0, 0, 1)  # ids 0, 1, 65536, 2**32
CHUNK_IDS = {A: 0, B: 1, C: 65536, D: 2**32}


class CellType:
    """Stand-in for a BSB cell type (only ``.name`` is used)."""

    def __init__(self, name: str):
        self.name = name


@pytest.fixture
def cs(engine: HDF5Engine) -> ConnectivitySet:
    return ConnectivitySet.create(engine, "pre", "post")


class Model:
    """Expected connections: per (src chunk id, dst chunk id), src and dst rows."""

    def __init__(self) -> None:
        self.blocks: dict[tuple[int, int], list[np.ndarray]] = defaultdict(
            lambda: [np.empty((0, 3), np.int64), np.empty((0, 3), np.int64)]
        )

    def add(self, src: int, dst: int, s: np.ndarray, t: np.ndarray) -> None:
        block = self.blocks[(src, dst)]
        block[0] = np.concatenate([block[0], s])
        block[1] = np.concatenate([block[1], t])

    def drop(self, chunk_ids: set[int]) -> None:
        for key in [k for k in self.blocks if k[0] in chunk_ids or k[1] in chunk_ids]:
            del self.blocks[key]

    def block(self, direction: str, local: int, glob: int) -> tuple[np.ndarray, ...]:
        key = (local, glob) if direction == "out" else (glob, local)
        if key not in self.blocks:
            return np.empty((0, 3), np.int64), np.empty((0, 3), np.int64)
        s, t = self.blocks[key]
        return (s, t) if direction == "out" else (t, s)

    def written(self, direction: str, local: int) -> list[int]:
        """The global chunks of a local chunk, in the order first written."""
        keys = [k if direction == "out" else k[::-1] for k in self.blocks]
        return [glob for loc, glob in keys if loc == local]

    def flat(self, directions=("inc", "out")) -> list[tuple[str, int, int]]:
        """Every (direction, local id, global id) holding data, in BSB order."""
        out = []
        for d in directions:
            keys = [
                k if d == "out" else k[::-1] for k, v in self.blocks.items() if len(v[0])
            ]
            out.extend((d, loc, glob) for loc, glob in sorted(keys))
        return out

    def __len__(self) -> int:
        return sum(len(v[0]) for v in self.blocks.values())


def random_locs(rng: np.random.Generator, n: int) -> np.ndarray:
    locs = rng.integers(0, 50, (n, 3))
    locs[rng.random(n) < 0.5, 1:] = -1
    return locs


def fill(cs: ConnectivitySet, rng: np.random.Generator, calls: int = 30) -> Model:
    """Random chunk_connect calls (repeated blocks, appends to early blocks)."""
    model = Model()
    chunks = list(CHUNK_IDS)
    for _ in range(calls):
        src, dst = (chunks[i] for i in rng.integers(0, len(chunks), 2))
        n = int(rng.integers(1, 12))
        s, t = random_locs(rng, n), random_locs(rng, n)
        cs.chunk_connect(src, dst, s, t)
        model.add(CHUNK_IDS[src], CHUNK_IDS[dst], s, t)
    return model


def check_against(cs: ConnectivitySet, model: Model) -> None:
    """Every read method agrees with the model, and inc/out mirror each other."""
    assert len(cs) == len(model)
    flat = [(d, lc.id, gc.id) for d, lc, gc, _ in cs.flat_iter_connections()]
    assert flat == model.flat()
    for d in ("inc", "out"):
        locals_ = sorted({loc for dd, loc, _ in model.flat() if dd == d})
        assert [c.id for c in cs.get_local_chunks(d)] == locals_
        for loc in locals_:
            globs = [g for dd, lo, g in model.flat() if dd == d and lo == loc]
            assert [c.id for c in cs.get_global_chunks(d, Chunk.from_id(loc))] == globs
            ll, gcol, gl = cs.load_local_connections(d, Chunk.from_id(loc))
            # A local chunk's blocks come in the order they were first written.
            written = [g for g in model.written(d, loc) if g in globs]
            exp = [model.block(d, loc, g) for g in written]
            assert np.array_equal(ll, np.concatenate([e[0] for e in exp]))
            assert np.array_equal(gl, np.concatenate([e[1] for e in exp]))
            assert gcol.dtype == np.int64
            assert gcol.tolist() == [g for g, e in zip(written, exp) for _ in e[0]]
            for g in globs:
                got = cs.load_block_connections(d, Chunk.from_id(loc), Chunk.from_id(g))
                assert all(map(np.array_equal, got, model.block(d, loc, g)))
    for src, dst in model.blocks:
        out = cs.load_block_connections("out", Chunk.from_id(src), Chunk.from_id(dst))
        inc = cs.load_block_connections("inc", Chunk.from_id(dst), Chunk.from_id(src))
        assert np.array_equal(out[0], inc[1]) and np.array_equal(out[1], inc[0])


def expected_stats(model: Model) -> dict[str, dict[str, int]]:
    stats: dict[int, dict[str, int]] = {}
    for (src, dst), (s, _) in model.blocks.items():
        if len(s):
            stats.setdefault(src, {"inc": 0, "out": 0})["out"] += len(s)
            stats.setdefault(dst, {"inc": 0, "out": 0})["inc"] += len(s)
    return {str(k): stats[k] for k in sorted(stats)}


# ------------------------------------------------------------------ lifecycle
def test_create_attrs_tags_and_remove(engine):
    assert ConnectivitySet.get_tags(engine) == []
    assert not ConnectivitySet.exists(engine, "a_to_b")
    with pytest.raises(DatasetNotFoundError, match="a_to_b"):
        ConnectivitySet(engine, "a_to_b")
    cs = ConnectivitySet.create(engine, CellType("a"), "b")
    assert (cs.tag, cs.pre_type_name, cs.post_type_name) == ("a_to_b", "a", "b")
    other = ConnectivitySet.create(engine, "b", "a", tag="back")
    assert ConnectivitySet.get_tags(engine) == ["a_to_b", "back"]
    assert ConnectivitySet(engine, "back").pre_type_name == "b"
    assert ConnectivitySet(engine, "a_to_b") == cs and other != cs
    with pytest.raises(DatasetExistsError):
        ConnectivitySet.create(engine, "x", "y", tag="back")
    assert ConnectivitySet(engine, "back").pre_type_name == "b"
    with pytest.raises(InvalidInputError):
        ConnectivitySet.create(engine, "a", "b", tag="bad/tag")
    cs.chunk_connect(A, B, [1], [2])
    cs.remove()
    assert ConnectivitySet.get_tags(engine) == ["back"]
    with pytest.raises(DatasetNotFoundError):
        len(cs)
    with pytest.raises(DatasetNotFoundError):
        ConnectivitySet(engine, "a_to_b")


def test_require(engine):
    cs = ConnectivitySet.require(engine, CellType("a"), CellType("b"))
    assert cs.tag == "a_to_b" and ConnectivitySet.exists(engine, "a_to_b")
    cs.chunk_connect(A, B, [1], [2])
    again = ConnectivitySet.require(engine, "a", "b")
    assert again == cs and len(again) == 1
    with pytest.raises(TypeMismatchError, match="a -> b"):
        ConnectivitySet.require(engine, "a", "c", tag="a_to_b")
    with pytest.raises(ValueError):  # TypeMismatchError is a ValueError
        ConnectivitySet.require(engine, "c", "b", tag="a_to_b")
    assert (cs.pre_type_name, cs.post_type_name, len(cs)) == ("a", "b", 1)
    assert ConnectivitySet.get_tags(engine) == ["a_to_b"]


def test_on_disk_layout(engine, cs):
    cs.chunk_connect(A, D, [[1, 2, 3], [4, -1, -1]], [[5, 6, 7], [8, -1, -1]])
    assert len(cs) == 2  # merges
    with h5py.File(engine.root, "r", locking=False) as f:
        g = f["connectivity/pre_to_post"]
        assert {k: str(g.attrs[k]) for k in ("pre", "post", "tag")} == {
            "pre": "pre",
            "post": "post",
            "tag": "pre_to_post",
        }
        assert "created_at" in g.attrs
        keys = g["index/key"][()]
        assert keys.dtype == np.int64 and keys.shape == (2, 3)
        assert sorted(map(tuple, keys.tolist())) == [(0, 2**32, 0), (1, 0, 2**32)]
        assert g["index/count"][()].tolist() == [2, 2]
        out, inc = g[f"out/0/{2**32}"], g[f"inc/{2**32}/0"]
        assert out["local_locs"].dtype == np.int64
        assert out["local_locs"][:2].tolist() == [[1, 2, 3], [4, -1, -1]]
        assert out["global_locs"][:2].tolist() == [[5, 6, 7], [8, -1, -1]]
        assert inc["local_locs"][:2].tolist() == [[5, 6, 7], [8, -1, -1]]
        assert inc["global_locs"][:2].tolist() == [[1, 2, 3], [4, -1, -1]]


# ----------------------------------------------------------------- chunk_connect
def test_chunk_connect_matches_model(cs):
    model = fill(cs, np.random.default_rng(1))
    check_against(cs, model)
    assert cs.get_chunk_stats() == expected_stats(model)
    # A second handle sees the same thing.
    check_against(ConnectivitySet(cs.engine, cs.tag), model)


def test_one_dimensional_locations_are_padded(cs):
    cs.chunk_connect(A, B, [3, 4], np.array([5.0, 6.0]))
    local, glob = cs.load_block_connections("out", A, B)
    assert local.tolist() == [[3, -1, -1], [4, -1, -1]]
    assert glob.tolist() == [[5, -1, -1], [6, -1, -1]]


def test_empty_chunk_connect_stores_nothing(cs):
    cs.chunk_connect(A, B, [], [])
    cs.chunk_connect(A, B, np.empty((0, 3), int), np.empty((0, 3), int))
    assert len(cs) == 0 and cs.get_local_chunks("out") == []


@pytest.mark.parametrize(
    ("src", "dst", "error"),
    [
        ([[1, -1, -1]], [[1, -1, -1], [2, -1, -1]], ShapeError),
        ([1, 2], [3], ShapeError),
        ([[1.5, -1, -1]], [[1, -1, -1]], DtypeError),
        ([1], [0.25], DtypeError),
        ([["a", "b", "c"]], [[1, -1, -1]], DtypeError),
        ([[1, 2]], [[1, 2]], ShapeError),
        ([[-1, -1, -1]], [[1, -1, -1]], InvalidInputError),
        ([[1, -2, -1]], [[1, -1, -1]], InvalidInputError),
    ],
)
def test_bad_locations_store_nothing(cs, src, dst, error):
    cs.chunk_connect(A, B, [1], [1])
    with pytest.raises(error):
        cs.chunk_connect(A, B, src, dst)
    assert len(cs) == 1
    assert cs.load_block_connections("out", A, B)[0].tolist() == [[1, -1, -1]]


def test_unequal_lengths_are_value_errors(cs):
    with pytest.raises(ValueError, match="2 source locations but 1"):
        cs.chunk_connect(A, B, [1, 2], [1])


def test_bad_direction(cs):
    cs.chunk_connect(A, B, [1], [1])
    calls = [
        lambda: cs.get_local_chunks("up"),
        lambda: cs.get_global_chunks("outgoing", A),
        lambda: cs.load_block_connections("IN", A, B),
        lambda: cs.load_local_connections(1, A),
        lambda: cs.flat_iter_connections("x"),  # raises before the first next()
        lambda: cs.nested_iter_connections("x"),
    ]
    for call in calls:
        with pytest.raises(InvalidInputError, match="expected 'inc' or 'out'"):
            call()


def test_chunk_sizes(engine, cs):
    sized = [Chunk(c, 10.0) for c in (A, B)]
    cs.chunk_connect(sized[0], sized[1], [1], [1])
    assert all(c.size == (10.0,) * 3 for c in cs.get_local_chunks("out"))
    assert engine._chunk_size() == (10.0,) * 3
    with pytest.raises(ChunkSizeError):
        cs.chunk_connect(Chunk(A, 5.0), B, [1], [1])
    with pytest.raises(ChunkSizeError):
        cs.chunk_connect(A, Chunk(B, 5.0), [1], [1])
    assert len(cs) == 1


def test_absent_chunks_read_as_empty(cs):
    cs.chunk_connect(A, B, [1], [1])
    for got in (
        cs.load_block_connections("out", B, A),
        cs.load_block_connections("inc", C, D),
    ):
        assert [a.shape for a in got] == [(0, 3), (0, 3)]
    local, gcol, glob = cs.load_local_connections("out", C)
    assert (local.shape, gcol.shape, glob.shape) == ((0, 3), (0,), (0, 3))
    assert cs.get_global_chunks("out", C) == []


def test_many_global_chunks_per_local_chunk(cs):
    n = 2000
    targets = [(i % 50, i // 50, 0) for i in range(n)]
    with cs.engine.write_scope():
        for i, t in enumerate(targets):
            cs.chunk_connect(A, t, [i], [n - i])
    ids = sorted(Chunk(t).id for t in targets)
    assert [c.id for c in cs.get_global_chunks("out", A)] == ids
    assert len(cs) == n
    local, gcol, glob = cs.load_local_connections("out", A)
    order = np.argsort([Chunk(t).id for t in targets], kind="stable")
    assert gcol.tolist() == ids
    assert local[:, 0].tolist() == order.tolist()
    assert glob[:, 0].tolist() == (n - order).tolist()
    assert len(cs.get_local_chunks("inc")) == n
    assert cs.load_block_connections("inc", targets[7], A)[1].tolist() == [[7, -1, -1]]


def test_appends_cost_rows_appended(monkeypatch, cs):
    """Appending to a block that is not the last stages exactly the new rows."""
    cs.chunk_connect(A, B, np.arange(5000), np.arange(5000))
    cs.chunk_connect(A, C, np.arange(3000), np.arange(3000))
    assert len(cs) == 8000
    staged: list[int] = []
    original = Transaction.stage_rows

    def spy(self, ds, start, rows):
        staged.append(len(rows))
        return original(self, ds, start, rows)

    monkeypatch.setattr(Transaction, "stage_rows", spy)
    cs.chunk_connect(A, B, [1, 2, 3], [4, 5, 6])
    assert len(cs) == 8003
    assert staged == [3, 3, 3, 3]  # 2 columns x 2 directions
    assert cs.load_block_connections("out", A, B)[0][-3:, 0].tolist() == [1, 2, 3]
    assert cs.load_block_connections("inc", B, A)[0][-3:, 0].tolist() == [4, 5, 6]


# ------------------------------------------------------------------- iteration
def test_flat_iter_is_a_generator_in_bsb_order(cs):
    model = fill(cs, np.random.default_rng(2))
    itr = cs.flat_iter_connections()
    assert hasattr(itr, "__next__")
    items = list(itr)
    assert [(d, lc.id, gc.id) for d, lc, gc, _ in items] == model.flat()
    assert [d for d, *_ in items] == sorted(d for d, *_ in items)  # inc then out
    for d, lc, gc, (local, glob) in items:
        exp = model.block(d, lc.id, gc.id)
        assert np.array_equal(local, exp[0]) and np.array_equal(glob, exp[1])
    assert [(d, lc.id, gc.id) for d, lc, gc, _ in cs.flat_iter_connections("out")] == (
        model.flat(("out",))
    )


def test_flat_iter_pinning(cs):
    model = fill(cs, np.random.default_rng(3))

    def keys(**kw):
        return [(d, lc.id, gc.id) for d, lc, gc, _ in cs.flat_iter_connections(**kw)]

    everything = model.flat()
    assert keys(local_=A) == [k for k in everything if k[1] == 0]
    assert keys(direction="inc", local_=[D, A, D]) == [
        k for k in everything if k[0] == "inc" and k[1] in (0, 2**32)
    ]
    # A pinned global axis is visited for every local chunk, empty blocks included.
    pinned = keys(direction="out", global_=B)
    locals_out = sorted({k[1] for k in everything if k[0] == "out"})
    assert pinned == [("out", loc, 1) for loc in locals_out]
    for d, lc, gc, data in cs.flat_iter_connections("out", global_=[B, C]):
        exp = model.block(d, lc.id, gc.id)
        assert all(map(np.array_equal, data, exp))
    assert keys(direction="out", local_=B, global_=[A]) == [("out", 1, 0)]
    assert keys(local_=[]) == []
    bare = [
        (d, lc.id, gc.id) for d, lc, gc, _ in cs.flat_iter_connections(None, (0, 0, 0))
    ]
    assert bare == keys(local_=Chunk(A))


def test_nested_iter_levels(cs):
    model = fill(cs, np.random.default_rng(4))
    nested = cs.nested_iter_connections()
    seen = [
        (d, lc.id, gc.id, data)
        for d, litr in nested
        for lc, gitr in litr
        for gc, data in gitr
    ]
    assert [s[:3] for s in seen] == model.flat()
    for d, loc, glob, data in seen:
        assert all(map(np.array_equal, data, model.block(d, loc, glob)))
    assert len(list(nested)) == 2  # re-iterable
    # A pinned direction starts at (local, it); a pinned single local at (global, data).
    out = [
        (lc.id, gc.id) for lc, gitr in cs.nested_iter_connections("out") for gc, _ in gitr
    ]
    assert [("out", *k) for k in out] == model.flat(("out",))
    level = list(cs.nested_iter_connections("inc", local_=B))
    assert [gc.id for gc, _ in level] == [
        g for d, lo, g in model.flat() if d == "inc" and lo == 1
    ]
    (single,) = list(cs.nested_iter_connections("out", local_=A, global_=B))
    assert all(map(np.array_equal, single, model.block("out", 0, 1)))
    # A list of chunks keeps its level and restricts it.
    listed = list(cs.nested_iter_connections("out", local_=[B, A]))
    assert [lc.id for lc, _ in listed] == [
        loc for loc in (0, 1) if any(k[:2] == ("out", loc) for k in model.flat())
    ]
    by_dir = {
        d: [lc.id for lc, _ in it] for d, it in cs.nested_iter_connections(local_=[A])
    }
    assert by_dir == {"inc": [0], "out": [0]}


def test_returned_arrays_are_fresh_and_writable(cs):
    cs.chunk_connect(A, B, [[1, 2, 3]], [[4, 5, 6]])
    cs.chunk_connect(A, C, [[7, 8, 9]], [[1, 1, 1]])
    getters = {
        "block": lambda: cs.load_block_connections("out", A, B),
        "local": lambda: cs.load_local_connections("out", A)[::2],
        "flat": lambda: next(cs.flat_iter_connections("out"))[3],
        "nested": lambda: next(iter(next(iter(cs.nested_iter_connections("out")))[1]))[1],
    }
    for name, get in getters.items():
        first = get()
        before = [a.copy() for a in first]
        for arr in first:
            assert arr.flags.writeable, name
            arr[:, 0] += 1000  # what bsb's ConnectivityIterator does, in place
        again = get()
        for a, b in zip(again, before):
            assert np.array_equal(a, b), name
        for a, b in zip(again, first):
            assert not np.shares_memory(a, b), name


def test_iterators_read_one_batch_at_a_time(monkeypatch, cs):
    for i in range(6):
        cs.chunk_connect(A, (i + 1, 0, 0), [i], [i])
    assert len(cs) == 6
    reads: list[int] = []
    original = conn._read_block

    def spy(set_id, key, n):
        reads.append(n)
        return original(set_id, key, n)

    monkeypatch.setattr(conn, "_read_block", spy)
    monkeypatch.setattr(conn, "READ_BATCH_BLOCKS", 2)
    itr = cs.flat_iter_connections("out")
    assert reads == []  # nothing is read before the first item is asked for
    next(itr)
    assert len(reads) == 2
    next(itr)
    assert len(reads) == 2
    next(itr)
    assert len(reads) == 4
    assert len(list(itr)) == 3 and len(reads) == 6
    reads.clear()
    monkeypatch.setattr(conn, "READ_BATCH_BLOCKS", 256)
    monkeypatch.setattr(conn, "READ_BATCH_ROWS", 1)
    inner = next(iter(cs.nested_iter_connections("out")))[1]
    gen = iter(inner)
    next(gen)
    assert len(reads) == 1


def test_len_and_stats_read_no_data(monkeypatch, cs):
    model = fill(cs, np.random.default_rng(5))

    def refuse(*args):
        raise AssertionError("connection data was read")

    monkeypatch.setattr(conn, "_read_block", refuse)
    monkeypatch.setattr(conn, "_read_block_into", refuse)
    assert len(cs) == len(model)
    assert cs.get_chunk_stats() == expected_stats(model)
    assert [c.id for c in cs.get_local_chunks("out")] == sorted(
        {k[0] for k in model.blocks}
    )


def test_engine_chunk_stats_sum_every_set(engine, cs):
    ps = PlacementSet.create(engine, "pre")
    ps.append_data(A, np.zeros((3, 3)))
    ps.append_data(D, np.zeros((2, 3)))
    other = ConnectivitySet.create(engine, "post", "pre")
    cs.chunk_connect(A, B, [0, 1], [0, 0])
    cs.chunk_connect(B, B, [0], [1])
    other.chunk_connect(B, A, [0, 0, 0], [0, 1, 2])
    assert cs.get_chunk_stats() == {"0": {"inc": 0, "out": 2}, "1": {"inc": 3, "out": 1}}
    assert engine.get_chunk_stats() == {
        "0": {"placed": 3, "connections": {"inc": 3, "out": 2}},
        "1": {"placed": 0, "connections": {"inc": 3, "out": 4}},
        str(2**32): {"placed": 2, "connections": {"inc": 0, "out": 0}},
    }


# ------------------------------------------------------------------------ clear
def test_clear_everything(cs):
    fill(cs, np.random.default_rng(6))
    cs.clear()
    assert len(cs) == 0 and cs.get_chunk_stats() == {}
    assert list(cs.flat_iter_connections()) == []
    cs.clear()  # idempotent
    cs.chunk_connect(A, B, [1], [2])
    check_against(cs, _single(0, 1, [1], [2]))
    assert cs.pre_type_name == "pre" and ConnectivitySet(cs.engine, cs.tag).tag == cs.tag


def _single(src: int, dst: int, s: list[int], t: list[int]) -> Model:
    model = Model()
    model.add(
        src, dst, conn._as_locs(s, "s", "t", True), conn._as_locs(t, "t", "t", True)
    )
    return model


@pytest.mark.parametrize("chunks", [[B], [A, D], [C], []])
def test_clear_chunks_removes_both_directions(cs, chunks):
    model = fill(cs, np.random.default_rng(7), calls=40)
    cs.clear(chunks)
    model.drop({Chunk(c).id for c in chunks})
    check_against(cs, model)  # includes the inc/out mirror check
    cs.clear(chunks)  # idempotent
    assert len(cs) == len(model)
    cs.chunk_connect(B, B, [9], [9])
    model.add(1, 1, np.array([[9, -1, -1]]), np.array([[9, -1, -1]]))
    check_against(cs, model)


# ---------------------------------------------------------------------- connect
def _placement(engine: HDF5Engine, name: str, sizes: dict[tuple, int]):
    """A placement set with ``sizes[chunk]`` cells, appended out of id order, and the
    model of its global order: chunk id and chunk-local index per global id."""
    ps = PlacementSet.create(engine, name)
    for chunk, n in sizes.items():
        ps.append_data(chunk, np.zeros((n, 3)))
    ids = sorted(Chunk(c).id for c in sizes)
    counts = [sizes[next(c for c in sizes if Chunk(c).id == i)] for i in ids]
    chunk_of = np.repeat(ids, counts)
    local_of = np.concatenate([np.arange(n) for n in counts])
    return ps, chunk_of, local_of


def _expected_blocks(src_view, dst_view, pre_model, post_model, s, t) -> Model:
    model = Model()
    s, t = np.asarray(s), np.asarray(t)
    sg, tg = src_view[s[:, 0]], dst_view[t[:, 0]]
    for i in range(len(s)):
        srow, trow = s[i].copy(), t[i].copy()
        srow[0], trow[0] = pre_model[1][sg[i]], post_model[1][tg[i]]
        model.add(
            int(pre_model[0][sg[i]]), int(post_model[0][tg[i]]), srow[None], trow[None]
        )
    # One connect call writes its blocks by ascending (source, target) chunk id.
    blocks = sorted(model.blocks.items())
    model.blocks.clear()
    model.blocks.update(blocks)
    return model


def test_connect_demultiplexes_into_blocks(monkeypatch, engine, cs):
    pre = _placement(engine, "pre", {B: 4, A: 3, D: 2})
    post = _placement(engine, "post", {C: 5, A: 2})
    rng = np.random.default_rng(8)
    s = np.column_stack([rng.integers(0, 9, 60), rng.integers(-1, 4, (60, 2))])
    t = np.column_stack([rng.integers(0, 7, 60), rng.integers(-1, 4, (60, 2))])
    s_before, t_before = s.copy(), t.copy()
    appends: list[list] = []
    original = engine._append
    monkeypatch.setattr(
        engine, "_append", lambda recs: (appends.append(recs), original(recs))[1]
    )
    cs.connect(pre[0], post[0], s, t)
    assert len(appends) == 1  # one atomic append call for every block
    assert np.array_equal(s, s_before) and np.array_equal(t, t_before)  # not mutated
    expected = _expected_blocks(np.arange(9), np.arange(7), pre[1:], post[1:], s, t)
    assert len(appends[0]) == 2 * len(expected.blocks)
    check_against(cs, expected)


def test_connect_with_chunk_filters(engine, cs):
    pre = _placement(engine, "pre", {A: 3, B: 4, D: 2})
    post = _placement(engine, "post", {A: 2, C: 5})
    pre[0].set_chunk_filter([D, B])
    post[0].set_chunk_filter([C])
    s = [[0, -1, -1], [5, 1, 2], [3, -1, -1]]
    t = [[4, -1, -1], [0, -1, -1], [2, 3, 3]]
    cs.connect(pre[0], post[0], s, t)
    pre_view = np.flatnonzero(np.isin(pre[1], [1, 2**32]))
    post_view = np.flatnonzero(np.isin(post[1], [65536]))
    check_against(cs, _expected_blocks(pre_view, post_view, pre[1:], post[1:], s, t))


def test_connect_with_label_filters(engine, cs):
    pre = _placement(engine, "pre", {A: 3, B: 4})
    post = _placement(engine, "post", {C: 2, A: 3})
    pre[0].label(["x"], [1, 4, 6])
    post[0].label(["y"], [0, 4])
    pre[0].set_label_filter(["x"])
    post[0].set_label_filter(["y"])
    s, t = [[0, -1, -1], [2, -1, -1], [1, 0, 0]], [[1, -1, -1], [0, -1, -1], [1, 0, 1]]
    cs.connect(pre[0], post[0], s, t)
    expected = _expected_blocks(
        np.array([1, 4, 6]), np.array([0, 4]), pre[1:], post[1:], s, t
    )
    check_against(cs, expected)
    assert pre[0].get_label_filter() == ["x"]  # filters are left as they were


@pytest.mark.parametrize(
    ("s", "t", "match"),
    [
        ([[9, -1, -1]], [[0, -1, -1]], r"presynaptic.*\[9\]"),
        ([0, 1], [0, 5], r"postsynaptic.*\[5\]"),
        ([-1], [0], r"presynaptic"),
        ([12, 0], [7, 0], r"presynaptic.*\[12\].*postsynaptic.*\[7\]"),
    ],
)
def test_connect_out_of_bounds_stores_nothing(engine, cs, s, t, match):
    pre = _placement(engine, "pre", {A: 3, B: 4})
    post = _placement(engine, "post", {A: 5})
    cs.connect(pre[0], post[0], [0], [0])
    with pytest.raises(LocationOutOfBoundsError, match=match):
        cs.connect(pre[0], post[0], s, t)
    assert len(cs) == 1


def test_connect_out_of_filtered_view(engine, cs):
    pre = _placement(engine, "pre", {A: 3, B: 4})
    pre[0].set_chunk_filter([A])
    with pytest.raises(LocationOutOfBoundsError, match=r"\[3\]"):
        cs.connect(pre[0], pre[0], [3], [0])
    assert len(cs) == 0


def test_connect_empty_and_unequal(engine, cs):
    pre = _placement(engine, "pre", {A: 3})
    cs.connect(pre[0], pre[0], [], [])
    assert len(cs) == 0
    with pytest.raises(ShapeError):
        cs.connect(pre[0], pre[0], [0, 1], [0])
    assert len(cs) == 0


# ------------------------------------------------------------------ concurrency
def _writer(root: str, tag: str, seed: int, ready, go) -> None:
    engine = HDF5Engine(root)
    cs = ConnectivitySet(engine, tag)
    rng = np.random.default_rng(seed)
    for i in range(40):
        n = int(rng.integers(1, 20))
        cs.chunk_connect(A, (i % 3, 0, 0), np.full(n, seed), np.arange(n) + i * 100)
    engine.flush()
    ready.set()
    go.wait(60)
    engine.close()


def _expected_writer_rows(seed: int) -> dict[int, list[int]]:
    rng = np.random.default_rng(seed)
    out: dict[int, list[int]] = defaultdict(list)
    for i in range(40):
        n = int(rng.integers(1, 20))
        out[Chunk((i % 3, 0, 0)).id].extend((np.arange(n) + i * 100).tolist())
    return out


def test_two_processes_connect_into_one_set(engine, cs):
    ctx = multiprocessing.get_context("spawn")
    events = [(ctx.Event(), ctx.Event()) for _ in range(2)]
    procs = [
        ctx.Process(target=_writer, args=(engine.root, cs.tag, seed, *ev))
        for seed, ev in zip((1, 2), events)
    ]
    for p in procs:
        p.start()
    try:
        assert all(ready.wait(120) for ready, _ in events)
        # Both shards hold committed, unmerged calls: this read merges them together.
        snapshot = _per_writer(cs)
    finally:
        for _, go in events:
            go.set()
        for p in procs:
            p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]
    for seed in (1, 2):
        assert snapshot[seed] == _expected_writer_rows(seed)
    assert _per_writer(ConnectivitySet(engine, cs.tag)) == snapshot  # no duplicates
    assert len(cs) == sum(len(v) for s in (1, 2) for v in snapshot[s].values())


def _per_writer(cs: ConnectivitySet) -> dict[int, dict[int, list[int]]]:
    """{writer seed: {dst chunk id: dst cells in order}} from the "out" blocks."""
    out: dict[int, dict[int, list[int]]] = defaultdict(lambda: defaultdict(list))
    for _, _, gc, (local, glob) in cs.flat_iter_connections("out"):
        for seed in np.unique(local[:, 0]):
            out[int(seed)][gc.id].extend(glob[local[:, 0] == seed, 0].tolist())
    inc = sum(len(d[0]) for *_, d in cs.flat_iter_connections("inc"))
    assert inc == len(cs)
    return {k: dict(v) for k, v in out.items()}


def _requirer(root: str, barrier: Any, seed: int) -> None:
    engine = HDF5Engine(root)
    barrier.wait(60)
    cs = ConnectivitySet.require(engine, "a", "b")
    cs.chunk_connect(A, B, [seed], [seed])
    engine.close()


def test_require_from_several_processes(engine):
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(3)
    procs = [
        ctx.Process(target=_requirer, args=(engine.root, barrier, i)) for i in range(3)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    assert ConnectivitySet.get_tags(engine) == ["a_to_b"]
    cs = ConnectivitySet(engine, "a_to_b")
    assert sorted(cs.load_block_connections("out", A, B)[0][:, 0].tolist()) == [0, 1, 2]


# ------------------------------------------------- read caches see every write
def _out_view(cs: ConnectivitySet) -> dict[str, Any]:
    """Everything the per-block and per-chunk reads return for the "out" view."""
    return {
        "len": len(cs),
        "locals": [c.id for c in cs.get_local_chunks("out")],
        "globals_of_A": [c.id for c in cs.get_global_chunks("out", A)],
        "block_AB": cs.load_block_connections("out", A, B)[1][:, 0].tolist(),
        "local_A": cs.load_local_connections("out", A)[2][:, 0].tolist(),
        "flat": [
            (lc.id, gc.id, len(d[0])) for _, lc, gc, d in cs.flat_iter_connections()
        ],
    }


def test_read_cache_sees_appends_of_another_engine(engine, cs):
    cs.chunk_connect(A, B, [0], [10])
    before = _out_view(cs)  # the index and group of this read generation are cached
    other = ConnectivitySet(HDF5Engine(engine.root), cs.tag)
    other.chunk_connect(A, B, [1], [11])
    other.chunk_connect(A, C, [2], [12])
    after = _out_view(cs)
    assert before["block_AB"] == [10]
    assert after["block_AB"] == [10, 11]
    assert after["globals_of_A"] == [CHUNK_IDS[B], CHUNK_IDS[C]]
    assert after["local_A"] == [10, 11, 12]
    assert after["len"] == 3
    other.clear([C])
    assert _out_view(cs)["globals_of_A"] == [CHUNK_IDS[B]]


def _cache_writer(root: str, tag: str, step, done) -> None:
    engine = HDF5Engine(root)
    cs = ConnectivitySet(engine, tag)
    assert step.wait(60)
    step.clear()
    cs.chunk_connect(A, B, [1], [11])  # a shard append: the root is not touched
    cs.chunk_connect(A, C, [2], [12])
    engine.flush()
    done.set()
    assert step.wait(60)
    cs.clear([B])  # a root transaction: a new read generation
    done.set()
    engine.close()


def test_read_cache_sees_writes_of_another_process(engine, cs):
    cs.chunk_connect(A, B, [0], [10])
    ctx = multiprocessing.get_context("spawn")
    step, done = ctx.Event(), ctx.Event()
    proc = ctx.Process(target=_cache_writer, args=(engine.root, cs.tag, step, done))
    proc.start()
    try:
        assert _out_view(cs)["block_AB"] == [10]  # cached for this generation
        step.set()
        assert done.wait(120)
        done.clear()
        # The other process's appends returned (and sit in its shard): seen.
        seen = _out_view(cs)
        assert seen["block_AB"] == [10, 11]
        assert seen["globals_of_A"] == [CHUNK_IDS[B], CHUNK_IDS[C]]
        assert seen["local_A"] == [10, 11, 12]
        step.set()
        assert done.wait(120)
        cleared = _out_view(cs)
        assert cleared["globals_of_A"] == [CHUNK_IDS[C]]
        assert cleared["block_AB"] == []
        assert cleared["local_A"] == [12]
        assert cleared["len"] == 1
    finally:
        step.set()
        proc.join(120)
    assert proc.exitcode == 0
