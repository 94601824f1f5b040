"""Pinned examples of the differential harness: the three differences issue #12 found
(now equal on both engines), and bsb-store's behaviour where bsb-hdf5 is wrong (each
divergence of ``docs/plugin.rst``, "Differences from bsb-hdf5")."""

from __future__ import annotations

import numpy as np
import pytest

bsb = pytest.importorskip("bsb")
pytest.importorskip("bsb_hdf5")

from bsb import Chunk, MorphologySet  # noqa: E402
from bsb import exceptions as bsb_exc  # noqa: E402
from bsb.morphologies import Branch, Morphology  # noqa: E402

from .harness import Twin  # noqa: E402

pytestmark = [pytest.mark.serial_only, pytest.mark.parity]

C0, C1 = Chunk((0, 0, 0), (100.0,) * 3), Chunk((1, 0, 0), (100.0,) * 3)


@pytest.fixture
def twin(tmp_path):
    t = Twin(str(tmp_path))
    yield t
    t.close()


def _place(side, ct="a", sizes=((C0, 5), (C1, 4))):
    ps = side.ps(ct)
    for chunk, n in sizes:
        ps.append_data(chunk, np.arange(n * 3, dtype=float).reshape(n, 3) + chunk.id)
    return ps


def _placed(side, *args) -> None:
    _place(side, *args)


def _ours(twin):
    return twin.sides[1]


# ------------------------------------------------------- the three of issue #12
def test_empty_chunk_filter_means_every_chunk(twin):
    """#12: include then exclude the same chunk leaves an empty filter, which BSB
    reads as no filter: all cells (bsb-store read none)."""
    twin.both("place", _placed)

    def call(side):
        ps = side.ps("a")
        ps.include_chunk(C0)
        ps.exclude_chunk(C0)
        return len(ps), ps.load_ids(), ps.load_positions(), ps.get_loaded_chunks()

    out = twin.both("include, exclude, read", call)
    assert out.value[0] == 9
    assert out.value[1] == ("array", "i", (9,), list(range(9)))


def test_loaded_chunks_are_bsb_chunks_with_or_without_a_filter(twin):
    """#12: get_loaded_chunks() raised AttributeError ('Chunk' object has no attribute
    'coords') without a filter and after a filter of bsb Chunks."""
    twin.both("place", _placed)

    def call(side):
        ps = side.ps("a")
        unfiltered = ps.get_loaded_chunks()
        ps.set_chunk_filter([C1])
        filtered = ps.get_loaded_chunks()
        assert all(isinstance(c, Chunk) for c in unfiltered + filtered)
        return unfiltered, filtered

    out = twin.both("get_loaded_chunks", call)
    assert out.value == [[("chunk", 0), ("chunk", 1)], [("chunk", 1)]]


def test_connect_cells_stores_bsb_hdf5s_row_order(twin):
    """#12: with a presynaptic view of one chunk, bsb-hdf5 stores each block sorted by
    (postsynaptic cell, presynaptic cell); bsb-store kept the input order, and bsb's
    FuseConnectivity then built wrong fused sets."""
    twin.both("place a", lambda s: _placed(s, "a", ((C0, 5),)))
    twin.both("place b", lambda s: _placed(s, "b", ((C0, 3), (C1, 4))))
    src = np.array([[4, -1, -1], [1, -1, -1], [0, -1, -1], [3, -1, -1], [1, -1, -1]])
    dst = np.array([[5, -1, -1], [2, -1, -1], [2, -1, -1], [0, -1, -1], [6, -1, -1]])

    def call(side):
        net = side.network
        net.connect_cells(side.ps("a"), side.ps("b"), src, dst, "a_to_b")
        return net.get_connectivity_set("a_to_b").load_connections().all()

    out = twin.both("connect_cells", call)
    pre, post = (np.array(v[3])[:, 0].tolist() for v in out.value)
    assert (pre, post) == ([3, 0, 1, 4, 1], [0, 2, 2, 5, 6])


def test_connect_cells_keeps_input_order_over_several_presynaptic_chunks(twin):
    """The other half of bsb-hdf5's rule: a presynaptic view of several chunks keeps
    each block's rows in input order."""
    twin.both("place", _placed)
    src = np.array([[2, -1, -1], [0, -1, -1], [1, -1, -1]])
    dst = np.array([[1, -1, -1], [1, -1, -1], [0, -1, -1]])

    def call(side):
        net = side.network
        net.connect_cells(side.ps("a"), side.ps("a"), src, dst, "a_to_a")
        return net.get_connectivity_set("a_to_a").load_connections().all()

    out = twin.both("connect_cells", call)
    assert np.array(out.value[0][3])[:, 0].tolist() == [2, 0, 1]


# --------------------------------------------------- where bsb-hdf5 is wrong
def test_chunk_context_restores_the_filter_when_its_block_raises(twin):
    """chunk-context-on-error: bsb-hdf5 leaves the context's chunks as the filter."""
    ps = _place(_ours(twin))
    with pytest.raises(RuntimeError), ps.chunk_context([C1]):
        raise RuntimeError("in the block")
    assert ps.get_chunk_filter() is None
    assert len(ps) == 9


def test_including_a_chunk_twice_reads_it_once(twin):
    """include-twice: bsb-hdf5 lists the chunk twice and reads its cells twice."""
    ps = _place(_ours(twin))
    ps.include_chunk(C1)
    ps.include_chunk((1, 0, 0))
    assert ps.load_ids().tolist() == [5, 6, 7, 8]


def test_excluding_without_a_filter_keeps_every_other_chunk(twin):
    """exclude-unfiltered: bsb-hdf5 raises ValueError (list.remove)."""
    ps = _place(_ours(twin))
    ps.exclude_chunk(C0)
    assert ps.load_ids().tolist() == [5, 6, 7, 8]
    ps.exclude_chunk((0, 1, 0))  # not in the filter: nothing changes
    assert ps.load_ids().tolist() == [5, 6, 7, 8]


def test_set_chunk_filter_none_clears_the_filter(twin):
    """filter-none: bsb-hdf5 raises TypeError."""
    ps = _place(_ours(twin))
    ps.set_chunk_filter([C0])
    ps.set_chunk_filter(None)
    assert len(ps) == 9


def test_clear_placement_on_a_new_network(twin):
    """clear-placement-fresh: bsb-hdf5 raises KeyError and leaves no placement group."""
    net = _ours(twin).network
    net.clear_placement()
    assert len(net.get_placement_set("a")) == 0
    _place(_ours(twin))
    assert len(net.get_placement_set("a")) == 9


def test_reads_of_a_filter_on_absent_chunks_are_empty(twin):
    """filtered-read-of-absent-chunks, unwritten-set-filtered: bsb-hdf5 raises
    KeyError or ValueError from numpy."""
    side = _ours(twin)
    fresh = side.network.get_placement_set("b", chunks=[C1])
    assert len(fresh) == 0 and fresh.load_ids().tolist() == []
    _place(side)
    ps = side.network.get_placement_set("a", chunks=[(0, 5, 0)], labels=["x"])
    assert ps.load_positions().shape == (0, 3)
    assert ps.convert_to_local(np.arange(0)).dtype.kind == "i"


def test_load_local_connections_of_an_absent_chunk_is_empty(twin):
    """local-connections-absent-chunk: bsb-hdf5 raises KeyError."""
    side = _ours(twin)
    cs = side.network.require_connectivity_set(
        side.network.cell_types.a, side.network.cell_types.b, "t"
    )
    local, gchunks, glob = cs.load_local_connections("out", C1)
    assert local.shape == (0, 3) and gchunks.shape == (0,) and glob.shape == (0, 3)


def test_load_additional_of_a_missing_key_says_so(twin):
    """additional-missing-key: bsb-hdf5 returns an empty array whatever the cells."""
    ps = _place(_ours(twin))
    with pytest.raises(bsb_exc.DatasetNotFoundError, match="'w'"):
        ps.load_additional("w")


def test_a_removed_morphology_is_gone_from_the_metadata(twin):
    """removed-morphology-lingers: bsb-hdf5 keeps its name and meta after remove."""
    repo = _ours(twin).network.morphologies
    repo.save("m", Morphology([Branch(np.ones((2, 3)), np.ones(2))]))
    repo.remove("m")
    assert repo.list() == [] and repo.all() == []
    with pytest.raises(bsb_exc.MissingMorphologyError):
        repo.get_meta("m")


def test_appending_morphologies_to_a_label_filtered_view(twin):
    """append-morphologies-half-done: bsb-hdf5 raises IndexError after it stored the
    positions (half an append). bsb-store appends every column."""
    side = _ours(twin)
    repo = side.network.morphologies
    repo.save("m", Morphology([Branch(np.ones((2, 3)), np.ones(2))]))
    ps = _place(side)
    ps.label(["x"], [0])
    ps.set_label_filter(["x"])
    ps.append_data(
        C0,
        np.zeros((2, 3)),
        morphologies=MorphologySet([repo.preload("m")], np.zeros(2, dtype=int)),
    )
    ps.set_label_filter(None)
    assert len(ps) == 11
    indices, names = ps.load_morphology_indices()
    assert [names[i] if i >= 0 else None for i in indices] == [None] * 5 + ["m"] * 2 + [
        None
    ] * 4


def test_missing_file_id_is_file_not_found(twin):
    """file-missing-id: bsb-hdf5 raises KeyError."""
    files = _ours(twin).network.files
    for call in (files.load, files.remove, files.get_meta):
        with pytest.raises(FileNotFoundError):
            call("nope")


def test_connect_out_of_bounds_stores_nothing(twin):
    """connect-out-of-bounds: bsb-hdf5 drops out-of-range presynaptic ids over several
    chunks, stores them with a one-chunk view, and raises for postsynaptic ids only
    after it stored the blocks before them. bsb-store raises and stores nothing."""
    side = _ours(twin)
    ps = _place(side)
    for src in ([[9, -1, -1]], [[0, -1, -1]]):
        dst = [[0, -1, -1]] if src[0][0] == 9 else [[9, -1, -1]]
        with pytest.raises(bsb_exc.ConnectivityError):
            side.network.connect_cells(ps, ps, np.array(src), np.array(dst), "t")
    assert len(side.network.get_connectivity_set("t")) == 0


def test_labelling_a_view_that_names_an_absent_chunk(twin):
    """label-absent-chunk: bsb-hdf5 fails half-way and leaves the filter changed."""
    ps = _place(_ours(twin))
    ps.set_chunk_filter([C1, (0, 3, 0)])
    ps.label(["x"], [1, 2])
    assert [c.id for c in ps.get_chunk_filter()] == [1, Chunk((0, 3, 0), None).id]
    ps.set_chunk_filter(None)
    assert ps.get_labelled(["x"]).tolist() == [6, 7]


def test_clearing_a_connectivity_set_after_clear_placement(twin):
    """clear-set-after-clear-placement: bsb-hdf5 raises KeyError, clears nothing."""
    side = _ours(twin)
    ps = _place(side)
    side.network.connect_cells(ps, ps, [[0, -1, -1]], [[8, -1, -1]], "t")
    side.network.clear_placement()
    cs = side.network.get_connectivity_set("t")
    cs.clear()
    assert len(cs) == 0


def test_load_local_connections_in_the_order_blocks_were_first_written(twin):
    """Found by the long profile: bsb-hdf5 keeps a local chunk's rows in the order its
    global chunks were first connected, not by chunk id."""
    c2 = Chunk((0, 1, 0), (100.0,) * 3)

    def call(side):
        net = side.network
        cs = net.require_connectivity_set(net.cell_types.a, net.cell_types.a, "t")
        for glob in (c2, C1, C2 := Chunk((0, 0, 1), (100.0,) * 3), C1):
            cs.chunk_connect(C0, glob, [[glob.id % 7, -1, -1]], [[0, -1, -1]])
        cs.chunk_connect(C2, C0, [[1, -1, -1]], [[2, -1, -1]])
        return cs.load_local_connections("out", C0), cs.load_local_connections("inc", C0)

    out = twin.both("chunk_connect, load_local_connections", call)
    assert out.value[0][1][3] == [c2.id, 1, 1, 2**32]


def test_appending_morphologies_for_zero_cells_creates_the_chunk(twin):
    """append-morphologies-half-done: for zero cells bsb-hdf5 raises ValueError
    (numpy's vectorize) after it created the chunk, and does not count it."""
    side = _ours(twin)
    repo = side.network.morphologies
    repo.save("m", Morphology([Branch(np.ones((2, 3)), np.ones(2))]))
    ps = side.ps("a")
    empty = MorphologySet([repo.preload("m")], np.zeros(0, dtype=int))
    ps.append_data(C1, np.zeros((0, 3)), morphologies=empty)
    assert [c.id for c in ps.get_all_chunks()] == [1]
    assert ps.get_chunk_stats() == {"1": 0}
