"""MorphologyRepository and MorphologyData (bsb_store.core.resources.morphologies).

No bsb here: the core stores arrays; the BSB plugin converts Morphology <-> arrays.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import h5py
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes, arrays

from bsb_store.core.engine import HDF5Engine
from bsb_store.core.maintenance import check
from bsb_store.core.resources.morphologies import (
    GROUP,
    MorphologyData,
    MorphologyHandle,
    MorphologyRepository,
    decode_meta,
    encode_meta,
    meta_equal,
)
from bsb_store.core.writes.txn import Transaction
from bsb_store.exceptions import (
    DtypeError,
    InvalidInputError,
    MorphologyExistsError,
    MorphologyNotFoundError,
    ShapeError,
)


@pytest.fixture
def engine(tmp_path):
    e = HDF5Engine(tmp_path / "s.h5")
    e.create()
    yield e
    e.close()


@pytest.fixture
def repo(engine) -> MorphologyRepository:
    return engine.morphologies


def tree(**meta) -> MorphologyData:
    """4 branches (one empty), 2 roots, 3 label sets, 2 properties."""
    return MorphologyData(
        points=np.arange(21, dtype=float).reshape(7, 3) - 5.5,
        radii=[1.0, 1.5, 2.0, 0.5, 0.25, 3.0, 4.0],
        labels=[0, 1, 1, 2, 0, 3, 3],
        labelsets={1: {"soma"}, 2: {"dendrites", "basal"}, 3: {"axon"}},
        properties={"kind": np.arange(7, dtype=np.int16), "diam": np.linspace(0, 1, 7)},
        branch_ends=[2, 4, 4, 7],
        parents=[-1, 0, 0, -1],
        meta=meta,
    )


def staging_left(engine) -> bool:
    with engine._read() as f:
        return "store/staging" in f


# ------------------------------------------------------------------ MorphologyData
def test_defaults_one_root_branch_and_empty_labels():
    m = MorphologyData(points=[[0, 0, 0], [1, 2, 3]], radii=[1, 2])
    assert m.points.dtype == np.float64 and m.points.shape == (2, 3)
    assert m.labels.tolist() == [0, 0] and m.labels.dtype == np.int64
    assert m.labelsets == {0: frozenset()}
    assert m.branch_ends.tolist() == [2] and m.parents.tolist() == [-1]
    assert m.properties == {} and m.meta == {}
    empty = MorphologyData(points=[], radii=[])
    assert empty.points.shape == (0, 3) and empty.n_branches == 0 and len(empty) == 0


def test_single_triple_is_one_point():
    m = MorphologyData(points=[1, 2, 3], radii=[4])
    assert m.points.tolist() == [[1, 2, 3]]


def test_inputs_are_copied():
    pts = np.zeros((2, 3))
    props = {"p": np.zeros(2)}
    m = MorphologyData(points=pts, radii=[1, 1], properties=props)
    pts[0, 0] = 99
    props["p"][1] = 5
    props["q"] = np.ones(2)
    assert m.points[0, 0] == 0 and m.properties["p"][1] == 0
    assert list(m.properties) == ["p"]


def test_fields_cannot_be_rebound():
    m = tree()
    with pytest.raises(AttributeError):
        m.points = np.zeros((0, 3))  # type: ignore[misc]
    with pytest.raises(TypeError):
        hash(m)


def test_branch_views():
    m = tree()
    assert m.n_branches == 4
    assert m.branch_counts.tolist() == [2, 2, 0, 3]
    assert m.branch_starts.tolist() == [0, 2, 4, 4]
    assert m.points[m.branch_slice(3)].tolist() == m.points[4:7].tolist()
    assert m.branch_slice(2) == slice(4, 4)


def test_from_branches_concatenates():
    m = MorphologyData.from_branches(
        [
            {
                "points": [[0, 0, 0], [1, 0, 0]],
                "radii": [1, 1],
                "labels": [1, 1],
                "properties": {"p": [0.5, 0.5]},
            },
            {"points": np.empty((0, 3)), "radii": [], "properties": {"p": []}},
            {"points": [[2, 0, 0]], "radii": [3], "properties": {"p": [7.0]}},
        ],
        parents=[-1, 0, 0],
        labelsets={1: {"a"}},
        meta={"k": 1},
    )
    assert m.branch_ends.tolist() == [2, 2, 3]
    assert m.parents.tolist() == [-1, 0, 0]
    assert m.points[:, 0].tolist() == [0, 1, 2]
    assert m.labels.tolist() == [1, 1, 0]
    assert m.properties["p"].tolist() == [0.5, 0.5, 7.0]
    assert m.meta == {"k": 1}
    empty = MorphologyData.from_branches([], [])
    assert empty.equals(MorphologyData(points=[], radii=[]))


def test_from_branches_checks_each_branch():
    with pytest.raises(InvalidInputError, match="same ones"):
        MorphologyData.from_branches(
            [
                {"points": [[0, 0, 0]], "radii": [1], "properties": {"p": [1]}},
                {"points": [[0, 0, 0]], "radii": [1]},
            ],
            [-1, 0],
        )
    # totals agree (3 points, 3 radii) but branch 0 has 1 point and 2 radii
    with pytest.raises(ShapeError, match="branch 0 radii"):
        MorphologyData.from_branches(
            [
                {"points": [[0, 0, 0]], "radii": [1, 1]},
                {"points": [[0, 0, 0], [1, 1, 1]], "radii": [1]},
            ],
            [-1, 0],
        )
    with pytest.raises(InvalidInputError, match="parent"):
        MorphologyData.from_branches(
            [
                {"points": [[0, 0, 0]], "radii": [1]},
                {"points": [[1, 1, 1]], "radii": [1]},
            ],
            [1, -1],
        )


def test_equality_compares_every_array_and_meta():
    a = tree(x=np.arange(3))
    assert a == tree(x=np.arange(3))
    assert a != tree(x=np.arange(3.0))  # int vs float meta array
    assert a.equals(tree(x=np.arange(3.0)), meta=False)
    assert a != a.copy_with(radii=a.radii + 1)
    assert a != a.copy_with(labelsets={1: {"soma"}, 2: {"basal"}, 3: {"axon"}})
    assert a != a.copy_with(parents=[-1, 0, 1, -1])
    assert a != a.copy_with(branch_ends=[2, 3, 4, 7])
    props = dict(a.properties, kind=a.properties["kind"].astype(np.int64))
    assert a != a.copy_with(properties=props)  # same values, other dtype
    assert a != a.copy_with(properties={"diam": a.properties["diam"]})
    assert a != "not a morphology"
    nan_radii = a.copy_with(radii=np.full(7, np.nan))
    assert nan_radii == nan_radii.copy_with()


# Invalid input: each case fails before anything is written.
BAD = {
    "radii length": (dict(radii=[1.0] * 6), ShapeError, "radii"),
    "labels length": (dict(labels=[0] * 8), ShapeError, "labels"),
    "property length": (dict(properties={"p": np.zeros(6)}), ShapeError, "'p'"),
    "property dtype": (dict(properties={"p": np.array(["a"] * 7)}), DtypeError, "'p'"),
    "property name": (dict(properties={"a/b": np.zeros(7)}), InvalidInputError, "a/b"),
    "parent out of range": (dict(parents=[-1, 0, 0, 4]), InvalidInputError, "parent 4"),
    "parent below -1": (dict(parents=[-1, -2, 0, -1]), InvalidInputError, "parent -2"),
    "parent after child": (dict(parents=[-1, 2, 0, -1]), InvalidInputError, "parent 2"),
    "own parent": (dict(parents=[-1, 1, 0, -1]), InvalidInputError, "parent 1"),
    "ends short": (dict(branch_ends=[2, 4, 4, 6]), InvalidInputError, "point count 7"),
    "ends decreasing": (dict(branch_ends=[2, 1, 4, 7]), InvalidInputError, "non-decr"),
    "ends vs parents": (dict(parents=[-1, 0, 0]), ShapeError, "parents"),
    "no tree given": (dict(branch_ends=None), InvalidInputError, "both"),
    "nan point": (
        dict(points=np.r_[np.zeros((6, 3)), [[0, np.nan, 0]]]),
        InvalidInputError,
        "finite",
    ),
    "inf point": (
        dict(points=np.r_[np.zeros((6, 3)), [[np.inf, 0, 0]]]),
        InvalidInputError,
        "finite",
    ),
    "points shape": (dict(points=np.zeros((7, 2))), ShapeError, "points"),
    "unknown label id": (dict(labels=[0, 1, 1, 2, 0, 3, 9]), InvalidInputError, "9"),
    "float labels": (dict(labels=np.zeros(7)), DtypeError, "labels"),
    "labelset 0 not empty": (
        dict(labelsets={0: {"x"}, 1: {"soma"}, 2: set(), 3: set()}),
        InvalidInputError,
        "id 0",
    ),
    "labelset is a str": (
        dict(labelsets={1: "soma", 2: set(), 3: set()}),
        InvalidInputError,
        "collection",
    ),
    "labelset negative id": (
        dict(labelsets={-1: {"a"}, 1: {"s"}, 2: set(), 3: set()}),
        InvalidInputError,
        ">= 0",
    ),
    "meta not json": (dict(meta={"s": {1, 2}}), InvalidInputError, "set"),
    "meta int key": (dict(meta={1: "x"}), InvalidInputError, "key 1"),
    "meta not a dict": (dict(meta=[1]), InvalidInputError, "dict"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_invalid_input_leaves_repository_unchanged(repo, engine, case):
    kept = repo.save("kept", tree(v=1))
    changes, exc, match = BAD[case]
    base = {k: getattr(tree(), k) for k in tree().__dataclass_fields__}
    with pytest.raises(exc, match=match):
        repo.save("new", MorphologyData(**{**base, **changes}))
    assert repo.list() == ["kept"]
    assert repo.load("kept") == kept
    assert not staging_left(engine)


def _nan_point(m):
    m.points[3, 1] = np.nan


def _inf_point(m):
    m.points[0] = np.inf


def _bad_parent(m):
    m.parents[3] = 7


def _parent_after_child(m):
    m.parents[1] = 3


def _bad_end(m):
    m.branch_ends[3] = 99


def _unknown_label(m):
    m.labels[0] = 11


def _short_property(m):
    m.properties["short"] = np.zeros(3)


def _labelset_zero(m):
    m.labelsets[0] = frozenset({"x"})


def _meta_object(m):
    m.meta["o"] = object()


def _meta_bytes(m):
    m.meta["nested"] = [1, {"b": b"raw"}]


def _meta_complex(m):
    m.meta["c"] = np.array([1 + 2j])


@pytest.mark.parametrize(
    "mutate",
    [
        _nan_point,
        _inf_point,
        _bad_parent,
        _parent_after_child,
        _bad_end,
        _unknown_label,
        _short_property,
        _labelset_zero,
        _meta_object,
        _meta_bytes,
        _meta_complex,
    ],
)
def test_save_revalidates_in_place_changes(repo, engine, mutate):
    kept = repo.save("kept", tree(v=1))
    m = tree()
    mutate(m)
    with pytest.raises(InvalidInputError):
        repo.save("new", m)
    with pytest.raises(InvalidInputError):
        repo.save("kept", m, overwrite=True)
    assert repo.list() == ["kept"]
    assert repo.load("kept") == kept
    assert not staging_left(engine)


def test_names_must_be_utf8(repo, engine):
    """Found by the property test: h5py raised UnicodeEncodeError mid-transaction."""
    kept = repo.save("kept", tree())
    with pytest.raises(InvalidInputError, match="UTF-8"):
        repo.save("\ud800", tree())
    with pytest.raises(InvalidInputError, match="UTF-8"):
        repo.save("x", tree().copy_with(properties={"\udfff": np.zeros(7)}))
    with pytest.raises(InvalidInputError, match="UTF-8"):
        repo.load("\ud800")
    assert repo.list() == ["kept"] and repo.load("kept") == kept
    assert not staging_left(engine)


def test_save_rejects_other_objects(repo):
    with pytest.raises(InvalidInputError, match="MorphologyData"):
        repo.save("x", {"points": []})  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="name"):
        repo.save("a/b", tree())
    with pytest.raises(InvalidInputError):
        repo.save("", tree())
    assert repo.list() == []


# --------------------------------------------------------------------- repository
def test_save_load_roundtrip(repo):
    m = tree(source="unit test", scale=np.array([1.0, 2.0]))
    stored = repo.save("cell", m)
    assert stored.equals(m, meta=False)
    assert "name" not in m.meta  # the caller's object is not modified
    assert stored.meta["name"] == "cell" and stored.meta["source"] == "unit test"
    loaded = repo.load("cell")
    assert loaded == stored
    assert list(loaded.properties) == ["kind", "diam"]  # creation order
    assert loaded.properties["kind"].dtype == np.int16
    assert loaded.labelsets == {
        0: set(),
        1: {"soma"},
        2: {"basal", "dendrites"},
        3: {"axon"},
    }
    assert loaded.points.flags.writeable  # fresh arrays the caller owns


def test_ldc_mdc(repo):
    m = tree()
    stored = repo.save("t", m)
    np.testing.assert_array_equal(stored.meta["ldc"], [-5.5, -4.5, -3.5])
    np.testing.assert_array_equal(stored.meta["mdc"], [12.5, 13.5, 14.5])
    meta = repo.get_meta("t")
    assert meta["ldc"].dtype == np.float64 and meta["ldc"].shape == (3,)
    np.testing.assert_array_equal(meta["mdc"], m.points.max(axis=0))
    empty = repo.save("e", MorphologyData(points=[], radii=[], meta={"ldc": 1}))
    for key in ("ldc", "mdc"):
        got = repo.get_meta("e")[key]
        assert got.shape == (3,) and np.isnan(got).all()
        assert np.isnan(empty.meta[key]).all()


def test_duplicate_save(repo):
    first = repo.save("m", tree(v=1))
    with pytest.raises(MorphologyExistsError, match="'m'"):
        repo.save("m", MorphologyData(points=[[9, 9, 9]], radii=[9]))
    assert repo.load("m") == first
    second = repo.save(
        "m", MorphologyData(points=[[9, 9, 9]], radii=[9], meta={"w": 2}), overwrite=True
    )
    loaded = repo.load("m")
    assert loaded == second and loaded.points.tolist() == [[9, 9, 9]]
    assert "v" not in loaded.meta and loaded.meta["w"] == 2
    assert repo.list() == ["m"]


def test_missing_names(repo):
    repo.save("there", tree())
    for call in (
        repo.load,
        repo.remove,
        repo.get_meta,
        repo.preload,
        lambda n: repo.load_many(["there", n]),
    ):
        with pytest.raises(MorphologyNotFoundError, match="'nope'"):
            call("nope")
    with pytest.raises(LookupError):
        repo.load("nope")
    assert repo.list() == ["there"]


def test_has_list_remove(repo):
    assert repo.list() == [] and not repo.has("b")
    for name in ("b", "a", "c"):
        repo.save(name, tree())
    assert repo.list() == ["a", "b", "c"]
    assert repo.has("b") and "b" in repo and "z" not in repo
    repo.remove("b")
    assert repo.list() == ["a", "c"] and not repo.has("b")
    assert repo.load("a").equals(repo.load("c"), meta=False)
    with pytest.raises(InvalidInputError):
        repo.has("x/y")


def test_handles(repo):
    repo.save("a", tree(k=np.arange(2)))
    repo.save("b", MorphologyData(points=[[1, 1, 1]], radii=[1]))
    h = repo.preload("a")
    assert isinstance(h, MorphologyHandle) and h.name == "a"
    meta = h.get_meta()
    meta["k"][0] = 42
    meta["extra"] = 1
    assert h.get_meta()["k"].tolist() == [0, 1] and "extra" not in h.meta
    assert h.load() == repo.load("a")
    assert h == repo.preload("a") and hash(h) == hash("a") and h != repo.preload("b")
    handles = repo.all()
    assert [x.name for x in handles] == ["a", "b"]
    assert meta_equal(handles[1].get_meta(), repo.get_meta("b"))
    repo.save("a", MorphologyData(points=[[2, 2, 2]], radii=[2]), overwrite=True)
    assert h.load().points.tolist() == [[2, 2, 2]]  # loads what is stored now
    given = repo.preload("not-stored-yet", meta={"x": 1})
    assert given.get_meta() == {"x": 1}


def test_get_all_meta(repo):
    assert repo.get_all_meta() == {}
    repo.save("y", tree(v=2))
    repo.save("x", tree(v=1))
    all_meta = repo.get_all_meta()
    assert list(all_meta) == ["x", "y"]
    assert all_meta["x"]["v"] == 1 and all_meta["y"]["name"] == "y"


class PrefixSelector:
    def __init__(self, prefix: str, required: bool = False):
        self.prefix, self.required = prefix, required
        self.seen: list[list[str]] = []

    def validate(self, all_handles):
        self.seen.append([h.name for h in all_handles])
        if self.required and not any(h.name.startswith(self.prefix) for h in all_handles):
            raise LookupError(f"no morphology starts with {self.prefix!r}")

    def pick(self, handle) -> bool:
        return handle.get_meta()["name"].startswith(self.prefix)


def test_select(repo):
    for name in ("pc_1", "gc_1", "pc_2", "gc_2"):
        repo.save(name, tree())
    assert repo.select() == []
    pc, gc = PrefixSelector("pc"), PrefixSelector("gc")
    picked = repo.select(pc, gc, PrefixSelector("pc_2"))
    assert [h.name for h in picked] == ["pc_1", "pc_2", "gc_1", "gc_2", "pc_2"]
    assert pc.seen == [["gc_1", "gc_2", "pc_1", "pc_2"]] and len(gc.seen) == 1
    assert picked[0].load() == repo.load("pc_1")
    with pytest.raises(LookupError, match="'bc'"):
        repo.select(pc, PrefixSelector("bc", required=True))


def test_meta_roundtrip_with_numpy(repo):
    meta = {
        "f64": np.array([0.1, -2.5e300, np.nan, np.inf]),
        "i8": np.array([[1, -2], [3, 4]], dtype=np.int8),
        "u64": np.array([2**64 - 1], dtype=np.uint64),
        "f32": np.array([1 / 3], dtype=np.float32),
        "bool": np.array([True, False]),
        "str": np.array(["ab", "ü"]),
        "empty": np.empty((0, 3)),
        "scalars": [np.float32(0.5), np.int64(-3), np.bool_(True), np.str_("s")],
        "py": {
            "none": None,
            "t": True,
            "i": 2**70,
            "f": 0.1,
            "nan": float("nan"),
            "s": "text",
            "list": [1, [2, {"deep": np.arange(2)}]],
        },
        "tuple": (1, 2),
    }
    repo.save("m", tree(**meta))
    got = repo.get_meta("m")
    for key in ("f64", "i8", "u64", "f32", "bool", "str", "empty"):
        assert type(got[key]) is np.ndarray, key
        assert got[key].dtype == meta[key].dtype and got[key].shape == meta[key].shape
        np.testing.assert_array_equal(got[key], meta[key])
    assert [type(x) for x in got["scalars"]] == [np.float32, np.int64, np.bool_, np.str_]
    assert got["py"]["i"] == 2**70 and np.isnan(got["py"]["nan"])
    assert got["py"]["list"][1][1]["deep"].tolist() == [0, 1]
    assert got["tuple"] == [1, 2]  # JSON has no tuples
    expected = {
        **meta,
        "tuple": [1, 2],
        "name": "m",
        "ldc": got["ldc"],
        "mdc": got["mdc"],
    }
    assert meta_equal(got, expected)
    assert repo.load("m").meta.keys() == expected.keys()


def test_meta_equal_can_fail():
    assert not meta_equal({"a": np.arange(2)}, {"a": np.arange(2.0)})
    assert not meta_equal({"a": np.arange(2)}, {"a": np.arange(3)})
    assert not meta_equal({"a": np.arange(2)}, {"a": [0, 1]})
    assert not meta_equal({"a": 1}, {"a": 1.0})
    assert not meta_equal({"a": 1}, {"a": 1, "b": 2})
    assert not meta_equal([1, 2], [1, 2, 3])
    assert meta_equal({"a": [float("nan")]}, {"a": [float("nan")]})


@pytest.mark.parametrize(
    "bad",
    [
        {"s": {1}},
        {"b": b"x"},
        {"c": 1j},
        {"o": np.array([None], dtype=object)},
        {"k": {2: 1}},
        {"x": {"__ndarray__": 1}},
        {"g": np.array([1.0], np.longdouble)}
        if np.dtype(np.longdouble).itemsize > 8
        else {"g": np.array([1 + 1j])},
    ],
)
def test_encode_meta_rejects(bad):
    with pytest.raises(InvalidInputError):
        encode_meta(bad)


def test_encode_decode_inverse():
    meta = {"a": np.arange(6).reshape(2, 3), "b": [np.float64(1.5)]}
    assert meta_equal(decode_meta(encode_meta(meta)), meta)
    assert decode_meta(encode_meta(meta).encode())["b"][0] == 1.5


def test_update_all_meta(repo):
    a = repo.save("a", tree(v=1))
    repo.save("b", tree(v=2))
    repo.update_all_meta({"a": {"k": np.arange(2)}})
    assert meta_equal(repo.get_meta("a"), {"k": np.arange(2)})
    assert repo.get_meta("b")["v"] == 2
    assert repo.load("a").equals(a, meta=False)
    before = repo.get_all_meta()
    with pytest.raises(MorphologyNotFoundError, match="'zz'"):
        repo.update_all_meta({"a": {"k": 0}, "zz": {}})
    with pytest.raises(InvalidInputError):
        repo.update_all_meta({"a": {"k": {0}}})
    assert meta_equal(repo.get_all_meta(), before)


def test_set_all_meta(repo):
    repo.save("a", tree(v=1))
    b = repo.save("b", tree(v=2))
    repo.set_all_meta({"a": {"only": "this"}})
    assert repo.get_all_meta() == {"a": {"only": "this"}, "b": {}}
    assert repo.load("b").equals(b, meta=False)
    before = repo.get_all_meta()
    with pytest.raises(MorphologyNotFoundError, match="'c'"):
        repo.set_all_meta({"b": {"x": 1}, "c": {}})
    assert repo.get_all_meta() == before
    repo.set_all_meta({})
    assert repo.get_all_meta() == {"a": {}, "b": {}}


EDGE_CASES = {
    "empty": MorphologyData(points=[], radii=[]),
    "empty branches": MorphologyData(
        points=[], radii=[], branch_ends=[0, 0, 0], parents=[-1, -1, -1]
    ),
    "single point": MorphologyData(points=[[1, 2, 3]], radii=[0.5]),
    "single-point roots": MorphologyData(
        points=[[0, 0, 0], [1, 1, 1], [2, 2, 2]],
        radii=[1, 2, 3],
        branch_ends=[1, 2, 3],
        parents=[-1, -1, -1],
    ),
    "child by index": MorphologyData(
        points=np.arange(15.0).reshape(5, 3),
        radii=[1] * 5,
        branch_ends=[1, 3, 4, 5],
        parents=[-1, 0, 0, 1],
    ),
    "empty child of point": MorphologyData(
        points=[[0, 0, 0]], radii=[1], branch_ends=[1, 1], parents=[-1, 0]
    ),
    "properties": MorphologyData(
        points=np.zeros((3, 3)),
        radii=[1, 1, 1],
        properties={
            "a": [1.0, np.nan, 3.0],
            "flag": np.array([True, False, True]),
            "vec": np.ones((3, 2), dtype=np.float32),
        },
    ),
    "label sets": MorphologyData(
        points=np.zeros((4, 3)),
        radii=[1] * 4,
        labels=[2, 1, 0, 2],
        labelsets={1: {"a"}, 2: {"a", "b"}, 5: {"unused"}},
    ),
    "empty points with properties": MorphologyData(
        points=[], radii=[], properties={"p": []}
    ),
}


@pytest.mark.parametrize("case", list(EDGE_CASES))
def test_edge_cases_roundtrip(repo, case):
    m = EDGE_CASES[case]
    stored = repo.save(case, m)
    loaded = repo.load(case)
    assert loaded == stored and loaded.equals(m, meta=False)
    assert loaded.branch_ends.tolist() == m.branch_ends.tolist()
    assert loaded.parents.tolist() == m.parents.tolist()
    assert loaded.labelsets == m.labelsets
    assert {k: v.dtype for k, v in loaded.properties.items()} == {
        k: v.dtype for k, v in m.properties.items()
    }


def test_on_disk_layout(repo, engine):
    repo.save("cell", tree(v=np.arange(2)))
    repo.save("plain", MorphologyData(points=[[1, 2, 3]], radii=[4.0]))
    with engine._read() as f:
        assert "morphology_meta" not in f
        g = f["morphologies/cell"]
        assert sorted(g) == ["branches", "points", "properties"]
        rows = g["points"]
        assert rows.shape == (7,) and rows.dtype.names == ("position", "radius", "label")
        assert rows.dtype["position"] == np.dtype(("<f8", (3,)))
        assert rows.dtype["radius"] == np.float64 and rows.dtype["label"] == np.int64
        assert rows["position"].tolist() == tree().points.tolist()
        assert rows["label"].tolist() == [0, 1, 1, 2, 0, 3, 3]
        assert json.loads(g.attrs["labelsets"]) == {
            "0": [],
            "1": ["soma"],
            "2": ["basal", "dendrites"],
            "3": ["axon"],
        }
        assert g["branches"].dtype == np.int64
        assert g["branches"][()].tolist() == [[2, -1], [4, 0], [4, 0], [7, -1]]
        assert list(g["properties"]) == ["kind", "diam"]  # creation order
        meta = json.loads(g.attrs["meta"])
        assert meta["v"] == {"__ndarray__": [0, 1], "dtype": "<i8", "shape": [2]}
        assert meta["name"] == "cell"
        assert sorted(f["morphologies/plain"]) == ["branches", "points"]


def test_the_earlier_layout_is_read(repo, engine):
    """Stores written before the per-point compound: points, radii and labels as three
    datasets, the label sets on ``labels``, an always present ``properties`` group."""
    m = tree(v=1)
    stored = repo.save("new", m)
    engine.close()
    with h5py.File(engine.root, "r+", locking=False) as f:
        g = f.create_group("morphologies/old")
        g.attrs["meta"] = f["morphologies/new"].attrs["meta"]
        g.create_dataset("points", data=m.points)
        g.create_dataset("radii", data=m.radii)
        labels = g.create_dataset("labels", data=m.labels)
        labels.attrs["labelsets"] = f["morphologies/new"].attrs["labelsets"]
        g.create_dataset("branches", data=np.column_stack([m.branch_ends, m.parents]))
        props = g.create_group("properties", track_order=True)
        for k, v in m.properties.items():
            props.create_dataset(k, data=v)
    old = repo.load("old")
    assert old.equals(stored, meta=False) and old.meta["v"] == 1
    assert list(old.properties) == ["kind", "diam"]
    assert check(engine.root).ok


def test_save_cost_independent_of_repository_size(repo, monkeypatch):
    published: list[list[dict]] = []
    commit = Transaction.commit

    def recording(txn):
        if txn._ops:
            published.append([dict(op) for op in txn._ops])
        commit(txn)

    monkeypatch.setattr(Transaction, "commit", recording)
    repo.save("first", tree())
    for i in range(20):
        repo.save(f"m{i}", tree())
    repo.list()  # merged
    published.clear()
    repo.save("last", tree())
    assert published == []  # a save is a shard commit, not a root transaction
    assert "last" in repo.list()  # the read merges it ...
    (ops,) = published
    touched = [op for op in ops if GROUP in op.get("dst", op.get("path", ""))]
    assert [op["op"] for op in touched] == ["replace"]  # ... as one group, no more
    assert touched[0]["src"].startswith("store/staging/")
    assert touched[0]["dst"] == "morphologies/last"


def test_load_many_is_one_read(repo, engine, monkeypatch):
    names = [f"m{i}" for i in range(5)]
    stored = repo.save_many({n: tree(i=i) for i, n in enumerate(names)})
    calls = []
    read = engine._read

    def counting():
        calls.append(1)
        return read()

    monkeypatch.setattr(engine, "_read", counting)
    loaded = repo.load_many(list(reversed(names)))
    assert len(calls) == 1
    assert loaded == list(reversed(stored))
    calls.clear()
    assert len(repo.all()) == 5 and len(calls) == 1


def test_save_many_is_all_or_nothing(repo):
    repo.save("b", tree(v=0))
    with pytest.raises(MorphologyExistsError, match="'b'"):
        repo.save_many({"a": tree(), "b": tree(), "c": tree()})
    assert repo.list() == ["b"]
    with pytest.raises(InvalidInputError):
        repo.save_many({"a": tree(), "c": tree(bad={1})})
    assert repo.list() == ["b"]
    stored = repo.save_many({"a": tree(), "b": tree(v=1)}, overwrite=True)
    assert repo.load_many(["a", "b"]) == stored and repo.get_meta("b")["v"] == 1


def test_repository_equality(engine, tmp_path):
    other = HDF5Engine(tmp_path / "other.h5")
    assert engine.morphologies == MorphologyRepository(engine)
    assert engine.morphologies is engine.morphologies
    assert engine.morphologies != other.morphologies
    assert engine.morphologies != "hello"


CHILD = textwrap.dedent(
    """
    import json, sys
    from bsb_store.core.engine import HDF5Engine
    from bsb_store.core.resources.morphologies import MorphologyData
    e = HDF5Engine(sys.argv[1])
    m = e.morphologies.load("parent")
    before = e.morphologies.list()
    e.morphologies.save("child", MorphologyData(points=[[1, 2, 3]], radii=[4.0],
                                                meta={"from": "child"}))
    print(json.dumps({"points": m.points.tolist(), "name": m.meta["name"],
                      "labels": m.labels.tolist(), "list": before}))
    e.close()
    """
)


def test_other_process_sees_saves(repo, engine):
    m = repo.save("parent", tree())
    assert repo.list() == ["parent"]  # the parent holds a read handle meanwhile
    out = subprocess.run(
        [sys.executable, "-c", CHILD, engine.root],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    seen = json.loads(out.stdout)
    assert seen == {
        "points": m.points.tolist(),
        "name": "parent",
        "labels": m.labels.tolist(),
        "list": ["parent"],
    }
    assert repo.list() == ["child", "parent"]
    child = repo.load("child")
    assert child.points.tolist() == [[1, 2, 3]] and child.meta["from"] == "child"


HOLDER = textwrap.dedent(
    """
    import sys
    import numpy as np
    from bsb_store.core.engine import HDF5Engine
    from bsb_store.core.resources.morphologies import MorphologyData
    e = HDF5Engine(sys.argv[1])
    e.morphologies.save("held", MorphologyData(points=[[7, 7, 7]], radii=[1.0]))
    print("saved", flush=True)
    sys.stdin.readline()  # alive, its save only in its shard, until told to go
    """
)


def test_a_save_pending_in_another_process_is_seen_by_saves(repo, engine):
    """Saves are shard commits, serialised under the root lock: another process's
    returned (unmerged) save takes its name, and a later overwrite wins."""
    child = subprocess.Popen(
        [sys.executable, "-c", HOLDER, engine.root],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout.readline().strip() == "saved"
        with pytest.raises(MorphologyExistsError, match="'held'"):
            repo.save("held", tree())
        mine = repo.save("held", tree(v=2), overwrite=True)
        child.stdin.write("\n")
        child.stdin.flush()
        assert child.wait(timeout=60) == 0
    finally:
        child.kill()
    assert repo.load("held") == mine


def test_saves_before_any_read(repo, engine):
    """Own saves that no read merged yet: a name is taken, the last save wins."""
    repo.save("a", tree(v=1))
    with pytest.raises(MorphologyExistsError, match="'a'"):
        repo.save("a", tree(v=2))
    repo.save("a", tree(v=3), overwrite=True)
    repo.save_many({"b": tree(v=4), "a": tree(v=5)}, overwrite=True)
    with pytest.raises(MorphologyExistsError, match="'b'"):
        repo.save_many({"c": tree(), "b": tree()})
    assert repo.list() == ["a", "b"]
    assert repo.get_meta("a")["v"] == 5 and repo.get_meta("b")["v"] == 4
    repo.remove("a")
    repo.save("a", tree(v=6))  # removed: free again
    engine.create()  # a new store: nothing of the old one is taken
    repo.save("b", tree(v=7))
    assert repo.list() == ["b"] and repo.get_meta("b")["v"] == 7


def test_a_save_in_a_write_scope_is_visible_when_it_returns(repo, engine):
    with engine.write_scope():
        repo.save("parent", tree())
        out = subprocess.run(
            [sys.executable, "-c", CHILD, engine.root],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["list"] == ["parent"]


# ------------------------------------------------------------------- property test
names = st.text(
    st.characters(blacklist_characters="/\x00", blacklist_categories=["Cs"]),
    min_size=1,
    max_size=6,
).filter(lambda s: s not in (".", ".."))
meta_keys = st.text(max_size=4).filter(lambda k: k != "__ndarray__")
meta_arrays = arrays(
    st.sampled_from([np.float64, np.float32, np.int64, np.uint8, np.bool_]),
    array_shapes(min_dims=1, max_dims=2, min_side=0, max_side=3),
)
meta_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats()
    | st.text(max_size=5)
    | st.floats(width=32).map(np.float32)
    | st.integers(-5, 5).map(np.int16)
)
meta_values = st.recursive(
    meta_scalars | meta_arrays,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(meta_keys, inner, max_size=3)
    ),
    max_leaves=8,
)


@st.composite
def morphologies(draw) -> MorphologyData:
    b = draw(st.integers(0, 6))
    parents = [draw(st.integers(-1, i - 1)) for i in range(b)]
    counts = [draw(st.integers(0, 4)) for _ in range(b)]
    n = sum(counts)
    finite = st.floats(allow_nan=False, allow_infinity=False)
    labelsets = {
        i: draw(st.sets(st.text(max_size=3), max_size=3))
        for i in draw(st.sets(st.integers(1, 9), max_size=3))
    }
    prop_types = draw(
        st.dictionaries(
            names,
            st.sampled_from([np.float64, np.int32, np.bool_, np.float32]),
            max_size=3,
        )
    )
    return MorphologyData(
        points=draw(arrays(np.float64, (n, 3), elements=finite)),
        radii=draw(arrays(np.float64, n)),
        labels=draw(arrays(np.int64, n, elements=st.sampled_from([0, *labelsets]))),
        labelsets=labelsets,
        properties={k: draw(arrays(t, n)) for k, t in prop_types.items()},
        branch_ends=np.cumsum(np.asarray(counts, dtype=np.int64)),
        parents=parents,
        meta=draw(st.dictionaries(meta_keys, meta_values, max_size=4)),
    )


def test_random_trees_roundtrip(repo):
    @settings(max_examples=60, deadline=None)
    @given(m=morphologies(), name=names)
    def check(m: MorphologyData, name: str):
        stored = repo.save(name, m, overwrite=True)
        loaded = repo.load(name)
        assert loaded == stored
        assert loaded.equals(m, meta=False)
        for key, value in m.meta.items():
            if key not in ("name", "ldc", "mdc"):
                assert meta_equal(loaded.meta[key], value), key
        assert loaded.meta["name"] == name
        if len(m):
            np.testing.assert_array_equal(loaded.meta["ldc"], m.points.min(axis=0))
        repo.remove(name)
        assert name not in repo

    check()
