"""Label sets: the vectorised encoding against BSB's one-cell-at-a-time semantics, and
the flat label column (in-place updates, appends, clears, the earlier per-chunk layout).
"""

import itertools
import json

import h5py
import numpy as np
import pytest

from bsb_store.core import PlacementSet
from bsb_store.core.maintenance import check
from bsb_store.core.resources import labels as labels_mod
from bsb_store.core.resources.labels import LabelSets

pytestmark = pytest.mark.serial_only


def sequential_apply(sets: LabelSets, values, targets, labels, add):
    """The reference: visit the targets one by one (the implementation before it was
    vectorised, itself checked against bsb's EncodedLabels)."""
    out = np.array(values, dtype=np.int64, copy=True)
    change = frozenset(labels)
    counter = (c for c in itertools.count() if c not in sets.sets)
    transitions: dict[int, int] = {}
    for i in np.asarray(targets, dtype=np.int64):
        src = int(out[i])
        dst = transitions.get(src)
        if dst is None:
            current = sets.labels_of(src)
            result = current | change if add else current - change
            dst = src if result == current else sets._find_or_add(result, counter)
            transitions[src] = dst
        out[i] = dst
    return out


def random_calls(rng, n_cells, n_calls):
    names = ["a", "b", "c", "d"]
    for _ in range(n_calls):
        k = int(rng.integers(0, n_cells + 3))
        targets = rng.integers(0, n_cells, k)  # unsorted, with repeats
        labels = list(rng.choice(names, int(rng.integers(1, 3)), replace=False))
        yield targets, labels, bool(rng.random() < 0.7)


@pytest.mark.parametrize("seed", range(30))
def test_vectorised_apply_matches_one_cell_at_a_time(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 40))
    fast, slow = LabelSets(), LabelSets()
    v_fast = v_slow = np.zeros(n, np.int64)
    for targets, labels, add in random_calls(rng, n, 12):
        v_fast = fast.apply(v_fast, targets, labels, add)
        v_slow = sequential_apply(slow, v_slow, targets, labels, add)
        assert v_fast.tolist() == v_slow.tolist()
        assert fast.sets == slow.sets and list(fast.sets) == list(slow.sets)


def test_apply_matches_bsb_encoded_labels():
    encoding = pytest.importorskip("bsb._encoding")
    rng = np.random.default_rng(7)
    ours = LabelSets()
    values = np.zeros(30, np.int64)
    theirs = encoding.EncodedLabels.none(30)
    for targets, labels, add in random_calls(rng, 30, 20):
        if not len(targets):
            continue
        values = ours.apply(values, targets, labels, add)
        (theirs.label if add else theirs.remove_labels)(labels, targets)
        assert values.tolist() == np.asarray(theirs).tolist()
        assert {k: set(v) for k, v in ours.sets.items()} == {
            k: set(v) for k, v in theirs.labels.items()
        }


def test_apply_with_many_distinct_sources():
    """More distinct source ids than the bincount shortcut handles, and large ids."""
    rng = np.random.default_rng(3)
    sets = {0: frozenset()}
    sets.update({i: frozenset({f"s{i}"}) for i in range(1, 40)})
    sets[10**9] = frozenset({"big"})
    values = rng.choice(np.asarray(list(sets)), 500)
    targets = rng.permutation(500)[:300]
    fast, slow = LabelSets(dict(sets)), LabelSets(dict(sets))
    got = fast.apply(values, targets, ["x"], True)
    assert got.tolist() == sequential_apply(slow, values, targets, ["x"], True).tolist()
    assert list(fast.sets.items()) == list(slow.sets.items())


# ------------------------------------------------------------------ the flat column
@pytest.fixture
def ps(engine):
    return PlacementSet.create(engine, "cells")


def column(engine, name="cells"):
    with h5py.File(engine.root, "r", locking=False) as f:
        g = f.get(f"placement/{name}/labels")
        if g is None:
            return None
        return {
            "keys": g["keys"][()].tolist(),
            "counts": g["counts"][()].tolist(),
            "values": g["values"][()].tolist(),
            "offset": g["values"].id.get_offset(),
        }


def test_labels_are_one_flat_column_updated_in_place(ps, engine):
    ps.append_data((1, 0, 0), np.zeros((3, 3)))
    ps.append_data((0, 0, 0), np.zeros((2, 3)))
    assert column(engine) is None  # appends never write labels
    ps.label(["a"], [0, 4])
    first = column(engine)
    assert first["keys"] == [0, 1] and first["counts"] == [2, 3]
    assert first["values"] == [1, 0, 0, 0, 1]
    ps.label(["b"], [1])
    again = column(engine)
    assert again["values"] == [1, 2, 0, 0, 1]
    assert again["offset"] == first["offset"]  # written in place, not a new dataset
    ps.label(["a"], [0])  # no change: nothing written, no new label set
    assert column(engine) == again
    with h5py.File(engine.root, "r", locking=False) as f:
        assert "labels" not in json.loads(f["placement/cells"].attrs["columns"])
        assert "labels" not in f["placement/cells/chunks/0"]


def test_cells_appended_after_labelling_start_unlabelled(ps, engine):
    ps.append_data((1, 0, 0), np.zeros((2, 3)))
    ps.label(["x"], [0, 1])
    ps.append_data((1, 0, 0), np.zeros((2, 3)))
    ps.append_data((0, 0, 0), np.zeros((1, 3)))
    assert ps.get_label_mask(["x"]).tolist() == [0, 1, 1, 0, 0]
    ps.set_chunk_filter([(1, 0, 0)])
    assert ps.get_label_mask(["x"]).tolist() == [1, 1, 0, 0]
    ps.set_chunk_filter(None)
    ps.label(["y"], [4])  # the column now covers the new cells
    assert column(engine)["counts"] == [1, 4]
    assert ps.get_labelled(["x"]).tolist() == [1, 2]
    assert ps.get_labelled(["y"]).tolist() == [4]


def test_cleared_chunks_lose_their_labels(ps, engine):
    ps.append_data((0, 0, 0), np.zeros((2, 3)))
    ps.append_data((1, 0, 0), np.zeros((2, 3)))
    ps.label(["x"], [0, 1, 2, 3])
    ps.clear([(0, 0, 0)])
    assert column(engine)["keys"] == [1]
    ps.append_data((0, 0, 0), np.zeros((3, 3)))  # the same chunk, new cells
    assert ps.get_labelled(["x"]).tolist() == [3, 4]
    ps.clear()
    assert column(engine) is None
    ps.append_data((1, 0, 0), np.zeros((2, 3)))
    assert ps.get_labelled(["x"]).tolist() == []
    assert check(engine.root).ok


def test_failed_labelling_leaves_the_column_as_it_was(ps, engine, monkeypatch):
    ps.append_data((0, 0, 0), np.zeros((4, 3)))
    ps.label(["x"], [0])
    before = column(engine)

    def boom(*args, **kwargs):
        raise RuntimeError("killed while publishing")

    monkeypatch.setattr(labels_mod, "write_labels", boom)
    with pytest.raises(RuntimeError):
        ps.label(["y"], [1, 2])
    monkeypatch.undo()
    assert column(engine) == before
    assert [sorted(s) for s in ps.get_unique_labels()] == [[], ["x"]]


def legacy_store(engine, ps):
    """A set labelled by the earlier layout: a per-chunk ``labels`` column."""
    ps.append_data((0, 0, 0), np.zeros((2, 3)))
    ps.append_data((1, 0, 0), np.zeros((3, 3)))
    len(ps)
    engine.close()
    with h5py.File(engine.root, "r+", locking=False) as f:
        g = f["placement/cells"]
        columns = json.loads(g.attrs["columns"])
        columns["labels"] = {"dtype": "<i8", "shape": [], "fill": 0}
        g.attrs["columns"] = json.dumps(columns)
        g["chunks/0"].create_dataset("labels", data=[1, 0], maxshape=(None,))
        g["chunks/1"].create_dataset("labels", data=[0, 0, 1], maxshape=(None,))
        g.attrs["labelsets"] = json.dumps({"0": [], "1": ["old"]})


def test_the_earlier_per_chunk_layout_is_read_then_moved(ps, engine):
    legacy_store(engine, ps)
    assert ps.get_labelled(["old"]).tolist() == [0, 4]
    assert check(engine.root).ok
    ps.label(["new"], [1])
    assert ps.get_labelled(["old"]).tolist() == [0, 4]
    assert ps.get_labelled(["new"]).tolist() == [1]
    assert column(engine)["values"] == [1, 2, 0, 0, 1]
    with h5py.File(engine.root, "r", locking=False) as f:
        g = f["placement/cells"]
        assert "labels" not in json.loads(g.attrs["columns"])
        assert "labels" not in g["chunks/0"] and "labels" not in g["chunks/1"]
    ps.append_data((0, 0, 0), np.zeros((1, 3)))  # appends no longer fill the column
    assert ps.get_label_mask(["old"]).tolist() == [1, 0, 0, 0, 0, 1]
    assert check(engine.root).ok


def test_check_reports_a_damaged_label_column(ps, engine):
    ps.append_data((0, 0, 0), np.zeros((2, 3)))
    ps.label(["x"], [0])
    engine.close()
    with h5py.File(engine.root, "r+", locking=False) as f:
        f["placement/cells/labels/counts"][0] = 5
    report = check(engine.root)
    (err,) = [e for e in report.errors if e.code == "label-column"]
    assert "counts add up to 5" in err.message


def test_ids_outgrowing_one_byte_widen_the_column(ps, engine):
    ps.append_data((0, 0, 0), np.zeros((64, 3)))
    rng = np.random.default_rng(5)
    model, values = LabelSets(), np.zeros(64, np.int64)
    for i in range(24):
        cells = np.sort(rng.choice(64, 32, replace=False))
        ps.label([f"l{i}"], cells)
        values = model.apply(values, cells, [f"l{i}"], True)
    assert max(model.sets) > 255
    with h5py.File(engine.root, "r", locking=False) as f:
        assert f["placement/cells/labels/values"].dtype == np.uint16
    for i in range(24):
        assert (
            ps.get_labelled([f"l{i}"]).tolist()
            == np.flatnonzero(model.mask(values, [f"l{i}"])).tolist()
        )
    assert ps.get_unique_labels() == [set(model.sets[k]) for k in np.unique(values)]


def test_labelling_through_chunk_and_label_filters_hits_the_cells_in_view(ps):
    """Cell ids of a labelling call index the filtered view; the cells they name are
    the ones ``load_ids`` lists for that view (chunks appended out of order, a filter
    with a chunk the set lacks, a label filter on top)."""
    for chunk, n in (((2, 0, 0), 4), ((0, 0, 0), 3), ((1, 0, 0), 2)):
        ps.append_data(chunk, np.zeros((n, 3)))
    ps.set_chunk_filter([(2, 0, 0), (5, 0, 0), (0, 0, 0)])
    view = ps.load_ids().tolist()
    assert len(view) == 7
    ps.label(["a"], [0, 4, 6])
    assert ps.get_labelled(["a"]).tolist() == sorted(view[i] for i in (0, 4, 6))
    ps.label_by_mask(["m"], np.arange(7) % 2 == 1)
    assert ps.get_labelled(["m"]).tolist() == [view[i] for i in (1, 3, 5)]
    ps.set_label_filter(["a"])
    labelled_view = ps.load_ids().tolist()
    ps.label(["b"], [1])
    ps.set_label_filter(None)
    assert ps.get_labelled(["b"]).tolist() == [labelled_view[1]]
    ps.set_chunk_filter(None)
    # Chunks by id: (0, 0, 0) holds cells 0-2, (1, 0, 0) 3-4, (2, 0, 0) 5-8.
    assert view == [0, 1, 2, 5, 6, 7, 8]
    assert ps.get_labelled(["a"]).tolist() == [0, 6, 8]
    assert ps.get_label_mask(["b"]).tolist() == [i == 6 for i in range(9)]
    with pytest.raises(Exception, match="out of range"):
        ps.label(["c"], [9])


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.uint32, np.int64])
def test_select_and_apply_keep_to_the_stored_id_type(dtype):
    """Masks (and present ids) over stored ids of any type equal ``np.isin`` (and
    ``np.unique``); ``apply`` keeps the type of the ids it is given while new ids fit
    in it, and widens them otherwise."""
    rng = np.random.default_rng(11)
    values = rng.integers(0, 200, 1000).astype(dtype)
    for ids in ([], [0], [3, 7, 199], [5, 10**9], list(range(0, 300, 3))):
        got = labels_mod.select(values, ids)
        assert got.tolist() == np.isin(values, ids).tolist()
    assert labels_mod.select(values[:0], [1]).tolist() == []
    assert labels_mod.present(values).tolist() == np.unique(values).tolist()
    assert labels_mod.present(values[:0]).tolist() == []
    sets = LabelSets({i: frozenset({f"s{i}"}) for i in range(200)} | {0: frozenset()})
    reference = LabelSets(dict(sets.sets))
    out = sets.apply(values, np.arange(0, 1000, 7), ["x"], True)
    expected = sequential_apply(reference, values, np.arange(0, 1000, 7), ["x"], True)
    assert out.tolist() == expected.tolist()
    assert list(sets.sets.items()) == list(reference.sets.items())
    assert out.dtype == (np.int64 if dtype == np.uint8 else dtype)
    assert values.max() < 200  # the input is left alone
