import pickle

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bsb_store.core.chunks import Chunk, ChunkLoader, chunk_id, chunklist, to_chunk
from bsb_store.exceptions import ChunkError

coord = st.integers(-(2**15), 2**15 - 1)


@pytest.mark.parametrize(
    ("coords", "expected"),
    [
        ((0, 0, 0), 0),
        ((1, 0, 0), 1),
        ((0, 1, 0), 65536),
        ((0, 0, 1), 4294967296),
        ((-1, 0, 0), 65535),
    ],
)
def test_id_packing_matches_bsb(coords, expected):
    assert Chunk(coords).id == expected


@given(coord, coord, coord)
def test_id_roundtrip(x, y, z):
    c = Chunk((x, y, z))
    assert Chunk.from_id(c.id).coords == (x, y, z)
    assert 0 <= c.id < 2**48


@pytest.mark.parametrize(
    "bad", [(2**15, 0, 0), (0, -(2**15) - 1, 0), (0, 0), (1.5, 0, 0), "abc"]
)
def test_bad_coordinates_raise(bad):
    with pytest.raises(ChunkError):
        Chunk(bad)


def test_bare_int_is_not_a_chunk():
    with pytest.raises(ChunkError, match="bare number"):
        to_chunk(5)


def test_size_equality_order_and_pickle():
    a = Chunk((1, 2, 3), 100)
    assert a.size == (100.0, 100.0, 100.0)
    assert np.allclose(a.ldc, [100, 200, 300]) and np.allclose(a.mdc, [200, 300, 400])
    assert a == Chunk((1, 2, 3)) == (1, 2, 3)
    assert hash(a) == hash(Chunk((1, 2, 3)))
    assert Chunk((1, 0, 0)) < Chunk((0, 1, 0))
    assert pickle.loads(pickle.dumps(a)).size == a.size
    assert Chunk((0, 0, 0), [np.nan] * 3).size is None
    with pytest.raises(ChunkError):
        Chunk((0, 0, 0), [1, 2])
    with pytest.raises(ChunkError):
        Chunk((0, 0, 0), -1)


def test_chunklist_sorted_unique():
    out = chunklist([(0, 1, 0), (1, 0, 0), [0, 1, 0], Chunk((0, 0, 0))])
    assert [c.id for c in out] == [0, 1, 65536]


def test_foreign_chunk_objects_keep_their_size():
    class Foreign(np.ndarray):
        pass

    f = np.array([2, 0, 0], dtype=np.int16).view(Foreign)
    f.dimensions = np.array([50.0, 50.0, 50.0])
    c = to_chunk(f)
    assert c.coords == (2, 0, 0) and c.size == (50.0, 50.0, 50.0)
    assert chunk_id(f) == 2


class Loader(ChunkLoader):
    def __init__(self, stored):
        self.stored = stored

    def _stored_chunk_ids(self):
        return list(self.stored)

    def _chunk_size(self):
        return (10.0, 10.0, 10.0)


def test_chunk_loader_filters():
    lo = Loader([65536, 0, 1])
    assert [c.id for c in lo.get_all_chunks()] == [0, 1, 65536]
    assert all(c.size == (10.0,) * 3 for c in lo.get_all_chunks())
    assert lo.get_loaded_chunks() == lo.get_all_chunks()
    lo.set_chunk_filter([(1, 0, 0)])
    assert [c.id for c in lo.get_loaded_chunks()] == [1]
    lo.include_chunk((0, 0, 0))
    assert [c.id for c in lo.get_loaded_chunks()] == [0, 1]
    lo.exclude_chunk((0, 0, 0))
    assert [c.id for c in lo.get_loaded_chunks()] == [1]
    with lo.chunk_context([(0, 1, 0)]):
        assert [c.id for c in lo.get_loaded_chunks()] == [65536]
    assert [c.id for c in lo.get_loaded_chunks()] == [1]
    lo.set_chunk_filter([])
    assert lo.get_chunk_filter() is None
    lo.exclude_chunk((0, 0, 0))
    assert [c.id for c in lo.get_loaded_chunks()] == [1, 65536]
