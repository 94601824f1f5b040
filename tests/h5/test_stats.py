"""Streaming statistics: computation, count-weighted merges, persistence, reopen."""

from __future__ import annotations

import itertools
import tempfile
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from bsb_store.exceptions import MissingDataError
from bsb_store.h5 import DataSet, H5File, NArray, Statistics

from .conftest import attrs_of


def dataset(path: Path, profile: str = "native", **kwargs) -> DataSet:
    f = H5File(path, profile=profile)
    return DataSet(NArray(dtype=None), f, name="x", expand_dimension=0, **kwargs)


# --------------------------------------------------------------- from_array
def test_from_array_numeric_kinds():
    s = Statistics.from_array(np.array([[1.0, 2.0], [3.0, 4.5]]))
    assert (s.count, s.minimum, s.maximum, s.mean) == (4, 1.0, 4.5, 2.625)
    assert s.is_finite and not s.has_complex
    assert s.min == s.minimum and s.max == s.maximum
    i = Statistics.from_array(np.array([3, -1, 4], dtype=np.int16))
    assert i.minimum.dtype == np.int16 and i.mean == pytest.approx(2.0)
    b = Statistics.from_array(np.array([True, False, False, True]))
    assert (b.minimum, b.maximum, b.mean) == (False, True, 0.5)
    c = Statistics.from_array(np.array([1 + 0j, 2 + 2j]))
    assert c.has_complex and c.mean == 1.5 + 1j
    assert not Statistics.from_array(np.array([1 + 0j])).has_complex


def test_from_array_non_finite():
    s = Statistics.from_array(np.array([1.0, np.nan, -np.inf, 5.0]))
    assert (s.minimum, s.maximum) == (-np.inf, 5.0)  # extremes ignore NaN
    assert np.isnan(s.mean) and not s.is_finite
    all_nan = Statistics.from_array(np.full(3, np.nan))
    assert np.isnan(all_nan.minimum) and np.isnan(all_nan.maximum)
    opposite = Statistics.from_array(np.array([np.inf, -np.inf]))
    assert np.isnan(opposite.mean) and not opposite.is_finite


def test_from_array_empty_and_text():
    assert Statistics.from_array(np.zeros((0, 3))) == Statistics(count=0)
    t = Statistics.from_array(np.array(["a", "b"]))
    assert t == Statistics(count=2)
    assert t.to_dict() == {
        "Minimum": None,
        "Maximum": None,
        "Mean": None,
        "IsFinite": True,
        "HasComplex": False,
    }


def test_merge_is_count_weighted():
    # Blocks of 0s, 1s and 2s: TVB's halving merge gives 1.25 (reference §4.3).
    blocks = [np.zeros(2), np.ones(2), np.full(2, 2.0)]
    merged = Statistics()
    for block in blocks:
        merged = merged.merge(Statistics.from_array(block))
    assert merged.mean == 1.0 and merged.count == 6
    uneven = Statistics.from_array(np.zeros(1)).merge(Statistics.from_array(np.ones(3)))
    assert uneven.mean == 0.75
    assert merged.merge(Statistics()) == merged
    assert Statistics().merge(merged) == merged


def test_merge_non_finite_and_text():
    a = Statistics.from_array(np.array([np.nan]))
    b = Statistics.from_array(np.array([2.0, 3.0]))
    m = a.merge(b)
    assert (m.minimum, m.maximum) == (2.0, 3.0) and not m.is_finite
    assert np.isnan(m.mean)
    inf = Statistics.from_array(np.array([np.inf])).merge(
        Statistics.from_array(np.ones(2))
    )
    assert inf.mean == np.inf and inf.maximum == np.inf
    t = Statistics(count=2).merge(Statistics(count=3))
    assert t == Statistics(count=5)
    big = Statistics(2, 1e308, 1e308, 1e308).merge(Statistics(2, 1e308, 1e308, 1e308))
    assert big.mean == 1e308  # n * mean overflows; the weighted form does not


# ------------------------------------------------------------- persistence
def test_statistics_written_on_store_and_append(h5path):
    ds = dataset(h5path)
    ds.store(np.array([[1.0, 2.0], [3.0, 4.5]]))
    attrs = attrs_of(h5path, "x")
    assert attrs["minimum"] == 1.0 and attrs["maximum"] == 4.5
    assert attrs["mean"] == 2.625 and attrs["count"] == 4
    assert attrs["is_finite"] == np.True_ and attrs["has_complex"] == np.False_
    other = h5path.with_name("g.h5")
    ds = dataset(other)
    ds.append(np.array([[5.0, 6.0]]))
    fresh = dataset(other)  # a new instance reads what is on disk
    assert fresh.get_cached_metadata().mean == 5.5
    assert attrs_of(other, "x")["count"] == 2


def test_reopen_and_append_merges_with_disk(h5path):
    # TVB overwrites the earlier statistics here (reference §4.4).
    dataset(h5path).append(np.array([[10.0], [20.0]]))
    later = dataset(h5path)
    later.append(np.array([[1.0], [1.0]]))
    s = dataset(h5path).get_cached_metadata()
    assert (s.minimum, s.maximum, s.mean, s.count) == (1.0, 20.0, 8.0, 4)


def test_stale_statistics_are_detected_and_rebuilt(h5path):
    ds = dataset(h5path)
    ds.append(np.array([[1.0], [2.0]]))
    with h5py.File(h5path, "r+") as raw:  # data added behind the layer's back
        raw["x"].resize(3, axis=0)
        raw["x"][2] = [9.0]
    with pytest.raises(MissingDataError, match="recompute_statistics"):
        dataset(h5path).get_cached_metadata()
    fresh = dataset(h5path)
    fresh.append(np.array([[3.0]]))  # merges with a rescan, not the stale attrs
    s = fresh.get_cached_metadata()
    assert (s.count, s.maximum, s.mean) == (4, 9.0, 15.0 / 4)
    with h5py.File(h5path, "r+") as raw:
        del raw["x"].attrs["mean"]
    assert dataset(h5path).recompute_statistics().mean == 15.0 / 4
    assert dataset(h5path).get_cached_metadata().mean == 15.0 / 4


def test_statistics_can_be_disabled(h5path):
    ds = dataset(h5path, statistics=False)
    ds.append(np.ones((2, 2)))
    ds.store(np.ones((2, 2)))
    assert attrs_of(h5path, "x") == {}


def test_tvb_statistics_encoding(h5path):
    ds = dataset(h5path, profile="tvb")
    ds.append(np.array([[1, 2]], dtype=np.int64))
    ds.append(np.array([[3, 4]], dtype=np.int64))
    attrs = attrs_of(h5path, "x")
    assert set(attrs) == {
        "TVB_Minimum",
        "TVB_Maximum",
        "TVB_Mean",
        "TVB_IsFinite",
        "TVB_HasComplex",
    }
    assert attrs["TVB_Minimum"].dtype == np.int64 and attrs["TVB_Maximum"] == 4
    assert attrs["TVB_Mean"].dtype == np.float64 and attrs["TVB_Mean"] == 2.5
    assert (attrs["TVB_IsFinite"], attrs["TVB_HasComplex"]) == ("bool:True", "bool:False")
    text = dataset(h5path.with_name("t.h5"), profile="tvb")
    text.store(np.array(["a"]))
    attrs = attrs_of(h5path.with_name("t.h5"), "x")
    assert (attrs["TVB_Minimum"], attrs["TVB_Maximum"], attrs["TVB_Mean"]) == ("", "", "")
    s = text.get_cached_metadata()
    assert s.minimum is None and s.mean is None and s.is_finite


def test_tvb_file_without_statistics_is_rescanned(h5path):
    with h5py.File(h5path, "w") as raw:  # TVB died before close(): no statistics
        raw.create_dataset("x", data=np.array([[4.0], [6.0]]), maxshape=(None, 1))
        raw.attrs["TVB_written_by"] = "x.Y"
    ds = dataset(h5path, profile="tvb")
    with pytest.raises(MissingDataError):
        ds.get_cached_metadata()
    ds.append(np.array([[2.0]]))
    s = ds.get_cached_metadata()
    assert (s.minimum, s.maximum, s.mean) == (2.0, 6.0, 4.0)


# --------------------------------------------------------------- hypothesis
finite = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)
special = st.one_of(finite, st.sampled_from([np.nan, np.inf, -np.inf]))


@st.composite
def append_plans(draw, elements=finite):
    rows = draw(st.integers(1, 40))
    data = draw(hnp.arrays(np.float64, (rows, 2), elements=elements))
    cuts = sorted(draw(st.lists(st.integers(0, rows), max_size=6)))
    bounds = [0, *cuts, rows]
    blocks = [data[a:b] for a, b in itertools.pairwise(bounds)]
    reopen = draw(st.lists(st.booleans(), min_size=len(blocks), max_size=len(blocks)))
    profile = draw(st.sampled_from(["native", "tvb"]))
    return data, blocks, reopen, profile


def _append_all(path, blocks, reopen, profile):
    f = H5File(path, profile=profile)
    ds = DataSet(NArray(dtype=float), f, name="x", expand_dimension=0)
    for block, new_instance in zip(blocks, reopen):
        if new_instance:  # a later run or another process: only the disk state remains
            f = H5File(path, profile=profile)
            ds = DataSet(NArray(dtype=float), f, name="x", expand_dimension=0)
        with f:
            ds.append(block)
    return H5File(path, profile=profile, mode="r")


def _check(stats, data):
    assert stats.is_finite == bool(np.isfinite(data).all())
    assert not stats.has_complex
    with np.errstate(invalid="ignore"):
        expected_mean = np.mean(data)
    if np.isnan(expected_mean):
        assert np.isnan(stats.mean)
    else:
        scale = max(1.0, float(np.max(np.abs(data))))
        assert stats.mean == pytest.approx(expected_mean, rel=1e-9, abs=1e-9 * scale)
    valid = data[~np.isnan(data)]
    if valid.size:
        assert stats.minimum == valid.min() and stats.maximum == valid.max()
    else:
        assert np.isnan(stats.minimum) and np.isnan(stats.maximum)


@settings(max_examples=60, deadline=None)
@given(append_plans())
def test_appended_statistics_equal_numpy_of_concatenation(plan):
    data, blocks, reopen, profile = plan
    with tempfile.TemporaryDirectory() as tmp:
        f = _append_all(Path(tmp) / "s.h5", blocks, reopen, profile)
        ds = DataSet(NArray(dtype=float), f, name="x")
        np.testing.assert_array_equal(ds.load(), data)
        stats = ds.get_cached_metadata()
        assert stats.count == data.size
        _check(stats, data)


@settings(max_examples=40, deadline=None)
@given(append_plans(elements=special))
def test_appended_statistics_with_nan_and_inf(plan):
    data, blocks, reopen, profile = plan
    with tempfile.TemporaryDirectory() as tmp:
        f = _append_all(Path(tmp) / "s.h5", blocks, reopen, profile)
        _check(DataSet(NArray(dtype=float), f, name="x").get_cached_metadata(), data)


@settings(max_examples=60, deadline=None)
@given(st.lists(hnp.arrays(np.float64, st.integers(0, 10), elements=finite), max_size=6))
def test_merge_equals_statistics_of_concatenation(parts):
    merged = Statistics()
    for part in parts:
        merged = merged.merge(Statistics.from_array(part))
    whole = np.concatenate([np.zeros(0), *parts])
    assert merged.count == whole.size
    if whole.size:
        _check(merged, whole)
    else:
        assert merged.mean is None
