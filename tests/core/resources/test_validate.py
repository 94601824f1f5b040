"""Input validation of ids: ``validate.as_int64``, ``as_locations``, ``as_index_rows``
(reliability bugs float-ids and uint64-wrap): nothing is wrapped, rounded or cast
before it is checked, and numpy never warns."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from bsb_store.core.resources.validate import as_index_rows, as_int64, as_locations
from bsb_store.exceptions import DtypeError, InvalidInputError, StoreError


@pytest.mark.parametrize(
    "value, error, match",
    [
        (np.array([0, np.inf]), InvalidInputError, "finite"),
        (np.array([np.nan]), InvalidInputError, "finite"),
        (np.array([1e30]), InvalidInputError, "within int64"),
        (np.array([2.0**63]), InvalidInputError, "within int64"),
        (np.array([1, np.inf], dtype=np.float16), InvalidInputError, "finite"),
        (np.array([1e30], dtype=np.float32), InvalidInputError, "within int64"),
        (np.array([2**64 - 1], dtype=np.uint64), InvalidInputError, "fit int64"),
        (np.array([2**63], dtype=np.uint64), InvalidInputError, "fit int64"),
        (np.array([0.5]), DtypeError, "integers"),
        (np.array([1j]), DtypeError, "complex"),
        (np.array([True]), DtypeError, "bool"),
        (np.array(["1"]), DtypeError, "integers"),
        (np.array([1, None], dtype=object), DtypeError, "object"),
    ],
)
def test_ids_int64_cannot_hold_are_refused_clearly(value, error, match):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(error, match=match) as info:
            as_int64(value, "ids")
        assert isinstance(info.value, StoreError) and "ids" in str(info.value)
        with pytest.raises(StoreError):
            as_locations(value, "src_locs")
        with pytest.raises(StoreError):
            as_index_rows(value, 10, "morphologies")


@pytest.mark.parametrize(
    "value",
    [
        np.array([-(2**63), 2**63 - 1], dtype=np.int64),
        np.array([0, 2**63 - 1], dtype=np.uint64),
        np.array([-(2.0**63), 3.0, -1.0]),
        np.array([7, 2], dtype=np.float16),
        np.array([5], dtype=np.int8),
    ],
)
def test_ids_int64_holds_are_kept_exactly(value):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = as_int64(value, "ids")
    assert out.dtype == np.int64
    assert [int(x) for x in out] == [int(x) for x in value]


def test_locations_and_index_rows():
    assert as_locations([3.0, 4.0], "cells").tolist() == [[3, -1, -1], [4, -1, -1]]
    assert as_locations(np.array([[1, 2, 3]], np.uint8), "x").dtype == np.int64
    assert as_index_rows([0.0, -1.0, 2.0], 3, "m").tolist() == [0, -1, 2]
    assert as_locations([], "x").shape == (0, 3)
    with pytest.raises(InvalidInputError, match=r"\[-1, 3\)"):
        as_index_rows([3], 3, "m")
