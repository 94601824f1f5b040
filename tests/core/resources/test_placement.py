"""PlacementSet: appends, global order, filters, labels, failure paths."""

import h5py
import numpy as np
import pytest

from bsb_store.core import Chunk, PlacementSet
from bsb_store.exceptions import (
    ChunkError,
    DatasetExistsError,
    DatasetNotFoundError,
    DtypeError,
    InvalidInputError,
    LabellingError,
    ShapeError,
)

pytestmark = pytest.mark.serial_only


@pytest.fixture
def ps(engine):
    return PlacementSet.create(engine, "granule")


def snapshot(ps):
    """Everything observable about a set, to prove failed calls change nothing."""
    return (
        len(ps),
        ps.get_chunk_stats(),
        ps.load_positions().tobytes(),
        ps.load_ids().tobytes(),
        [sorted(s) for s in ps.get_unique_labels()],
    )


def test_create_exists_require_remove(engine):
    assert not PlacementSet.exists(engine, "a")
    with pytest.raises(DatasetNotFoundError):
        PlacementSet(engine, "a")
    ps = PlacementSet.create(engine, "a")
    assert ps.tag == "a" and len(ps) == 0
    with pytest.raises(DatasetExistsError):
        PlacementSet.create(engine, "a")

    class CellType:
        name = "a"

    assert PlacementSet.require(engine, CellType()) == ps
    assert PlacementSet.list(engine) == ["a"]
    ps.remove()
    assert not PlacementSet.exists(engine, "a")
    with pytest.raises(InvalidInputError):
        PlacementSet.create(engine, "bad/name")


def test_global_order_is_chunks_by_id_then_insertion(ps):
    rng = np.random.default_rng(0)
    parts = {}
    for chunk in [(0, 1, 0), (1, 0, 0), (0, 0, 0), (1, 0, 0), (0, 1, 0)]:
        pos = rng.random((int(rng.integers(1, 6)), 3))
        ps.append_data(chunk, pos)
        parts.setdefault(Chunk(chunk).id, []).append(pos)
    expected = np.concatenate([np.concatenate(parts[k]) for k in sorted(parts)])
    assert np.array_equal(ps.load_positions(), expected)
    assert np.array_equal(ps.load_ids(), np.arange(len(expected)))
    assert ps.get_chunk_stats() == {
        str(k): sum(map(len, v)) for k, v in sorted(parts.items())
    }
    assert [c.id for c in ps.get_all_chunks()] == sorted(parts)


def test_columns_line_up_when_appends_differ(ps):
    ps.append_data((0, 0, 0), np.ones((2, 3)))
    ps.append_data(
        (0, 0, 0),
        np.ones((3, 3)),
        rotations=np.full((3, 3), 90.0),
        additional={"w": np.arange(3.0)},
    )
    ps.append_data((1, 0, 0), np.ones((1, 3)), morphologies=([0], ["m"]))
    assert ps.load_rotations().tolist() == [[0.0] * 3] * 2 + [[90.0] * 3] * 3 + [
        [0.0] * 3
    ]
    w = ps.load_additional("w")
    assert np.isnan(w[:2]).all() and w[2:5].tolist() == [0, 1, 2] and np.isnan(w[5])
    idx, names = ps.load_morphology_indices()
    assert idx.tolist() == [-1] * 5 + [0] and names == ["m"]
    assert set(ps.load_additional()) == {"w"}


def test_morphology_names_are_shared_per_set(ps):
    ps.append_data((0, 0, 0), np.zeros((3, 3)), morphologies=([1, 0, 1], ["a", "b"]))
    ps.append_data((1, 0, 0), np.zeros((2, 3)), morphologies=([0, 1], ["b", "c"]))
    idx, names = ps.load_morphology_indices()
    assert [names[i] for i in idx] == ["b", "a", "b", "b", "c"]
    assert names == ["a", "b", "c"]


def test_entities_and_empty_chunks(ps):
    ps.append_entities((0, 0, 0), 4, additional={"x": np.arange(4)})
    ps.append_data((2, 0, 0), [])
    assert len(ps) == 4
    assert [c.id for c in ps.get_all_chunks()] == [0, 2]
    assert ps.get_chunk_stats() == {"0": 4, "2": 0}
    with pytest.raises(DatasetNotFoundError):
        ps.load_positions()
    assert ps.load_additional("x").tolist() == [0, 1, 2, 3]
    with pytest.raises(InvalidInputError):
        ps.append_data((0, 0, 0), np.zeros((1, 3)), count=1)


def test_load_without_data(ps):
    assert ps.load_positions().shape == (0, 3)
    assert ps.load_rotations().shape == (0, 3)
    ps.append_data((0, 0, 0), np.zeros((2, 3)))
    with pytest.raises(DatasetNotFoundError, match="No rotation data"):
        ps.load_rotations()
    with pytest.raises(DatasetNotFoundError):
        ps.load_additional("nope")


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"positions": np.zeros((2, 2))}, ShapeError),
        ({"positions": [[np.nan, 0, 0]]}, InvalidInputError),
        ({"positions": [[np.inf, 0, 0]]}, InvalidInputError),
        ({"positions": np.array([["a", "b", "c"]])}, DtypeError),
        ({"positions": np.zeros((2, 3)), "rotations": np.zeros((3, 3))}, ShapeError),
        ({"positions": np.zeros((2, 3)), "additional": {"w": np.zeros(3)}}, ShapeError),
        (
            {"positions": np.zeros((1, 3)), "morphologies": ([2], ["a"])},
            InvalidInputError,
        ),
        ({"positions": np.zeros((1, 3)), "additional": {"a/b": [1]}}, InvalidInputError),
        ({"positions": np.zeros((1, 3)), "additional": {"s": ["x"]}}, InvalidInputError),
    ],
)
def test_bad_input_changes_nothing(ps, kwargs, error):
    ps.append_data((0, 0, 0), np.ones((2, 3)))
    before = snapshot(ps)
    with pytest.raises(error):
        ps.append_data((0, 0, 0), **kwargs)
    assert snapshot(ps) == before


def test_bad_chunks(ps):
    with pytest.raises(ChunkError):
        ps.append_data((40000, 0, 0), np.zeros((1, 3)))
    with pytest.raises(ChunkError):
        ps.append_data((0, 0), np.zeros((1, 3)))
    assert len(ps) == 0


def test_column_dtype_and_shape_stay_fixed(ps):
    ps.append_data((0, 0, 0), np.zeros((1, 3)), additional={"v": np.zeros((1, 2))})
    with pytest.raises(ShapeError):
        ps.append_data((0, 0, 0), np.zeros((1, 3)), additional={"v": np.zeros((1, 3))})
        len(ps)
    assert ps.load_additional("v").shape == (1, 2)


def test_chunk_filter(ps):
    ps.append_data((0, 0, 0), np.zeros((2, 3)))
    ps.append_data((1, 0, 0), np.ones((3, 3)))
    with ps.chunk_context([(1, 0, 0)]):
        assert len(ps) == 3 and ps.load_ids().tolist() == [2, 3, 4]
        assert (ps.load_positions() == 1).all()
    ps.set_chunk_filter([Chunk((0, 0, 0))])
    assert len(ps) == 2
    ps.include_chunk((1, 0, 0))
    assert len(ps) == 5
    ps.exclude_chunk((0, 0, 0))
    assert len(ps) == 3
    assert ps.convert_to_local([0, 2, 4]).tolist() == [0, 2]


def test_labels_follow_bsb_encoding(ps):
    # The documented bsb example: the label-set ids (and so their order) must match.
    ps.append_data((0, 0, 0), np.zeros((10, 3)))
    ps.label(["A", "B"], [0, 1, 2])
    ps.label(["C"], [3, 4])
    ps.label(["A", "B", "C"], [5])
    ps.label(["D"], [9])
    uniq = ps.get_unique_labels()
    assert uniq == [set(), {"A", "B"}, {"C"}, {"A", "B", "C"}, {"D"}]
    assert ps.get_labelled(["A"]).tolist() == [0, 1, 2, 5]
    assert ps.get_labelled([]).tolist() == [6, 7, 8]
    assert ps.get_label_mask(["C"]).tolist() == [0, 0, 0, 1, 1, 1, 0, 0, 0, 0]
    ps.set_label_filter(["C"])
    assert len(ps) == 3 and ps.load_ids().tolist() == [3, 4, 5]
    ps.label(["E"], [0])  # indexes the filtered view: cell 3
    ps.set_label_filter(None)
    assert ps.get_labelled(["E"]).tolist() == [3]
    ps.remove_labels(["C"], [3, 4])
    assert ps.get_labelled(["C"]).tolist() == [5]
    ps.label_by_mask(["Z"], np.arange(10) % 2 == 0)
    assert ps.get_labelled(["Z"]).tolist() == [0, 2, 4, 6, 8]
    ps.remove_labels_by_mask(["Z"], np.ones(10, bool))
    assert ps.get_labelled(["Z"]).tolist() == []


def test_labels_survive_later_appends(ps):
    ps.append_data((1, 0, 0), np.zeros((2, 3)))
    ps.label(["x"], [1])
    ps.append_data((0, 0, 0), np.zeros((3, 3)))  # shifts global ids of chunk 1
    assert ps.get_labelled(["x"]).tolist() == [4]
    ps.append_data((1, 0, 0), np.zeros((1, 3)))
    assert ps.get_label_mask(["x"]).tolist() == [0, 0, 0, 0, 1, 0]


def test_label_errors_change_nothing(ps):
    ps.append_data((0, 0, 0), np.zeros((5, 3)))
    ps.label(["a"], [0])
    before = snapshot(ps)
    for bad in ([-1], [5], [0, 99]):
        with pytest.raises(LabellingError):
            ps.label(["b"], bad)
    with pytest.raises(LabellingError, match="Mask doesn't fit"):
        ps.label_by_mask(["b"], np.ones(6, bool))
    with pytest.raises(LabellingError):
        ps.remove_labels_by_mask(["a"], np.ones(4, bool))
    assert snapshot(ps) == before
    ps.label(["b"], np.zeros(5, bool))  # an all-False mask is a no-op
    assert snapshot(ps) == before


def test_clear(ps):
    ps.append_data((0, 0, 0), np.zeros((2, 3)))
    ps.append_data((1, 0, 0), np.zeros((3, 3)))
    ps.clear([(0, 0, 0)])
    assert len(ps) == 3 and [c.id for c in ps.get_all_chunks()] == [1]
    ps.clear()
    assert len(ps) == 0 and ps.get_all_chunks() == []
    ps.append_data((0, 0, 0), np.zeros((1, 3)))
    assert len(ps) == 1


def test_append_additional(ps):
    ps.append_data((0, 0, 0), np.zeros((3, 3)))
    ps.append_additional("w", (0, 0, 0), [1.0, 2.0, 3.0])
    assert ps.load_additional("w").tolist() == [1, 2, 3]
    with pytest.raises(ShapeError):
        ps.append_additional("w", (0, 0, 0), [1.0])
    assert ps.load_additional("w").tolist() == [1, 2, 3]


def test_write_scope_defers_and_commits(engine, ps):
    with engine.write_scope():
        for i in range(10):
            ps.append_data((i, 0, 0), np.full((1, 3), i))
        assert engine._st.writer.committed == 0  # queued, nothing committed yet
    assert len(ps) == 10
    assert ps.load_positions()[:, 0].tolist() == list(range(10))


def test_read_scope_sees_own_appends(engine, ps):
    with engine.read_scope():
        ps.append_data((0, 0, 0), np.zeros((2, 3)))
        assert len(ps) == 2
        ps.append_data((0, 0, 0), np.zeros((1, 3)))
        assert len(ps) == 3


def test_returned_arrays_are_writable(ps):
    ps.append_data((0, 0, 0), np.zeros((2, 3)))
    a = ps.load_positions()
    a[0, 0] = 5
    assert ps.load_positions()[0, 0] == 0


@pytest.mark.parametrize("name", ["", "a/b", "\ud800", "x\0y", "."])
def test_invalid_set_names(engine, name):
    with pytest.raises(InvalidInputError):
        PlacementSet.create(engine, name)
    assert PlacementSet.list(engine) == []


def test_queued_appends_do_not_alias_the_callers_arrays(engine, ps):
    pos, w = np.zeros((2, 3)), np.zeros(2)
    with engine.write_scope():
        ps.append_data((0, 0, 0), pos, rotations=pos, additional={"w": w})
        pos[:] = 7
        w[:] = 7
    assert (ps.load_positions() == 0).all() and (ps.load_rotations() == 0).all()
    assert (ps.load_additional("w") == 0).all()


@pytest.mark.parametrize("rows", [10, 1000, 1025, 20000])
def test_first_append_fills_its_hdf5_chunks(engine, ps, rows):
    """A chunk's columns allocate what the first append holds, not the next power of
    two (HDF5 allocates whole chunks): at most the 64-row minimum for tiny appends."""
    ps.append_data(Chunk((0, 0, 0), (100, 100, 100)), np.ones((rows, 3)))
    engine.close()
    with h5py.File(engine.root, "r") as f:
        (cid,) = f["placement/granule/chunks"]
        ds = f[f"placement/granule/chunks/{cid}/position"]
        assert ds.shape == (rows, 3)
        assert ds.maxshape == (None, 3)
        # 20000 rows exceed one 256 KiB chunk: two chunks of 10000 rows.
        assert ds.id.get_storage_size() == max(rows, 64) * 3 * 8
    assert len(PlacementSet(engine, "granule")) == rows
