"""FileStore: exact round trips, metadata, active config, failure paths, processes.

Regression tests for the bsb-hdf5 file store bugs listed in
``shared/reference/bsb-contract.md`` §2.2/§5.5 name the bug they pin.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import textwrap
import time
import uuid

import h5py
import numpy as np
import pytest

from bsb_store.core import HDF5Engine
from bsb_store.core.resources import files as files_module
from bsb_store.core.resources.base import Resource
from bsb_store.core.resources.files import FileStore, meta_from_json, meta_to_json
from bsb_store.exceptions import (
    FormatError,
    InvalidInputError,
    MissingActiveConfigError,
    ReadOnlyError,
    StoreExistsError,
    StoreNotFoundError,
)

serial = pytest.mark.serial_only


@pytest.fixture
def fs(engine) -> FileStore:
    return engine.files


def raw(engine, id):
    """The on-disk dataset of file ``id``: (bytes, attrs) read with plain h5py."""
    with h5py.File(engine.root, "r", locking=False) as f:
        ds = f[f"files/{id}"]
        assert ds.dtype == np.uint8 and ds.ndim == 1
        return ds[()].tobytes(), dict(ds.attrs)


def snapshot(engine):
    """Everything a failed call must leave as it was."""
    with h5py.File(engine.root, "r", locking=False) as f:
        staging = "store/staging" in f
    fs = engine.files
    contents = {id: fs.load(id)[0] for id in fs.all()}
    return (
        fs.all().keys(),
        json.dumps(fs.all(), default=str),
        contents,
        engine.state_id,
        staging,
    )


# ------------------------------------------------------------------ round trips
@serial
def test_store_str_defaults(fs):
    id = fs.store("héllo wörld")
    assert uuid.UUID(id).version == 4 and str(uuid.UUID(id)) == id
    content, meta = fs.load(id)
    assert type(content) is str and content == "héllo wörld"
    assert fs.get_encoding(id) == "utf-8"
    assert raw(fs.engine, id)[0] == "héllo wörld".encode()
    assert isinstance(meta, dict)


@serial
def test_new_ids_are_unique(fs):
    assert fs.store("a") != fs.store("a")


@serial
def test_store_bytes_has_no_encoding(fs):
    data = bytes(range(256))
    id = fs.store(data)
    content, _ = fs.load(id)
    assert type(content) is bytes and content == data
    assert fs.get_encoding(id) is None
    assert "encoding" not in raw(fs.engine, id)[1]


@serial
@pytest.mark.parametrize(
    "content", [b"ab\0\0", b"\0", b"\0\0\0", "x\0\0", b"\0a\0"], ids=repr
)
def test_trailing_nuls_are_kept(fs, content):
    """bsb-hdf5 stored content in an 'S' dataset and lost trailing NUL bytes."""
    id = fs.store(content)
    loaded, _ = fs.load(id)
    assert loaded == content and type(loaded) is type(content)


@serial
@pytest.mark.parametrize("content", [b"", ""], ids=["bytes", "str"])
def test_empty_content(fs, content):
    id = fs.store(content)
    loaded, meta = fs.load(id)
    assert loaded == content and type(loaded) is type(content)
    assert meta["content_sha256"] == hashlib.sha256(b"").hexdigest()
    assert raw(fs.engine, id)[0] == b""


@serial
def test_load_returns_python_types_not_numpy(fs):
    """bsb-hdf5 returned np.bytes_ from load()."""
    content, meta = fs.load(fs.store(b"abc"))
    assert type(content) is bytes and not isinstance(content, np.generic)
    assert type(meta["mtime"]) is float


@serial
@pytest.mark.parametrize("encoding", ["utf-16", "latin-1", "utf-32-be"])
def test_non_default_encoding(fs, encoding):
    text = "ünï ço∂e ✓" if encoding != "latin-1" else "ünï çode"
    id = fs.store(text, encoding=encoding)
    assert fs.get_encoding(id) == encoding
    assert raw(fs.engine, id)[0] == text.encode(encoding)
    content, meta = fs.load(id)
    assert content == text and type(content) is str
    assert meta["content_sha256"] == hashlib.sha256(text.encode(encoding)).hexdigest()


@serial
def test_bytes_with_explicit_encoding_load_as_text(fs):
    """bsb-core's FileDependency stores downloaded bytes with the server's encoding."""
    id = fs.store("grüße".encode("latin-1"), encoding="latin-1")
    assert fs.get_encoding(id) == "latin-1"
    assert fs.load(id)[0] == "grüße"


@serial
def test_id_is_second_positional_argument(fs):
    """bsb-hdf5 took (content, meta, id): a positional id failed with TypeError."""
    assert fs.store("x", "my-id") == "my-id"
    assert fs.load("my-id")[0] == "x"


@serial
@pytest.mark.parametrize("id", ["a b", "ünï", "x.y", "-", "..."])
def test_unusual_valid_ids(fs, id):
    assert fs.store("c", id=id) == id
    assert fs.has(id) and fs.load(id)[0] == "c" and id in fs.all()


@serial
def test_large_file_round_trip(fs):
    data = np.random.default_rng(1).integers(0, 256, 50_000_000, np.uint8).tobytes()
    start = time.perf_counter()
    id = fs.store(data)
    content, meta = fs.load(id)
    elapsed = time.perf_counter() - start
    assert content == data
    assert meta["content_sha256"] == hashlib.sha256(data).hexdigest()
    assert elapsed < 10, f"50 MB store+load took {elapsed:.1f} s"


# ------------------------------------------------------------------- metadata
@serial
def test_meta_round_trip_with_numpy(fs):
    meta = {
        "n": 3,
        "f": 1.5,
        "flag": False,
        "none": None,
        "list": [1, "a", [2.5]],
        "tuple": (1, 2),
        "np_scalar": np.int64(7),
        "np_bool": np.bool_(True),
        "arr": np.arange(6, dtype=np.int32).reshape(2, 3),
        "nested": {"f": np.array([1.5, np.nan]), "deeper": [np.array([True, False])]},
        "text": np.array(["x", "yz"]),
        "empty": np.empty((0, 3)),
        "scalar_arr": np.array(2.5, dtype=np.float32),
    }
    before = repr(meta)
    _, back = fs.load(fs.store("x", meta=meta))
    assert repr(meta) == before, "the caller's meta was modified"
    assert back["n"] == 3 and back["f"] == 1.5 and back["flag"] is False
    assert back["none"] is None and back["list"] == [1, "a", [2.5]]
    assert back["tuple"] == [1, 2]
    assert back["np_scalar"] == 7 and type(back["np_scalar"]) is int
    assert back["np_bool"] is True
    for key, got in [
        ("arr", back["arr"]),
        ("text", back["text"]),
        ("empty", back["empty"]),
        ("scalar_arr", back["scalar_arr"]),
    ]:
        want = meta[key]
        assert isinstance(got, np.ndarray), key
        assert got.dtype == want.dtype and got.shape == want.shape, key
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(back["nested"]["f"], [1.5, np.nan])
    assert back["nested"]["deeper"][0].dtype == bool
    np.testing.assert_array_equal(back["nested"]["deeper"][0], [True, False])
    assert fs.get_meta(fs.store("y", meta=meta))["arr"].tolist() == [[0, 1, 2], [3, 4, 5]]


def test_meta_codec_functions():
    meta = {"a": np.array([[1, 2]], dtype=np.uint16), "b": {"c": (1, np.float64(2))}}
    text = meta_to_json(meta)
    assert isinstance(json.loads(text), dict)
    back = meta_from_json(text)
    assert back["a"].dtype == np.uint16 and back["a"].tolist() == [[1, 2]]
    assert back["b"] == {"c": [1, 2.0]}
    with pytest.raises(FormatError):
        meta_from_json("[1, 2]")
    with pytest.raises(FormatError):
        meta_from_json("{not json")


@serial
def test_mtime_and_sha256(fs):
    before = time.time()
    id = fs.store("content", meta={"content_sha256": "forged", "mtime": -1})
    after = time.time()
    mtime = fs.get_mtime(id)
    assert type(mtime) is float and before <= mtime <= after
    meta = fs.get_meta(id)
    assert meta["mtime"] == mtime
    assert meta["content_sha256"] == hashlib.sha256(b"content").hexdigest()
    _, attrs = raw(fs.engine, id)
    assert float(attrs["mtime"]) == mtime
    assert json.loads(attrs["meta"]) == meta
    assert attrs["encoding"] == "utf-8"


@serial
def test_get_meta_and_all(fs):
    assert fs.all() == {}
    a = fs.store("a", meta={"k": 1})
    b = fs.store(b"b", id="b-id", meta={"k": 2})
    everything = fs.all()
    assert set(everything) == {a, "b-id"} and b == "b-id"
    assert everything[a]["k"] == 1 and everything["b-id"]["k"] == 2
    assert everything[a] == fs.get_meta(a) and everything[b] == fs.get_meta(b)
    assert set(everything[a]) == {"k", "mtime", "content_sha256"}


@serial
def test_has(fs):
    """bsb-hdf5's has() looked at the root instead of files/ and was always False."""
    assert not fs.has("x")
    fs.store("c", id="x")
    assert fs.has("x")
    assert not fs.has("y")
    fs.remove("x")
    assert not fs.has("x")


@serial
def test_remove(fs):
    keep = fs.store("keep")
    gone = fs.store("gone")
    fs.remove(gone)
    assert set(fs.all()) == {keep}
    with pytest.raises(FileNotFoundError):
        fs.load(gone)
    assert fs.load(keep)[0] == "keep"


# -------------------------------------------------------------- failure paths
@serial
@pytest.mark.parametrize(
    "call",
    [
        lambda fs: fs.load("nope"),
        lambda fs: fs.remove("nope"),
        lambda fs: fs.get_mtime("nope"),
        lambda fs: fs.get_encoding("nope"),
        lambda fs: fs.get_meta("nope"),
    ],
    ids=["load", "remove", "get_mtime", "get_encoding", "get_meta"],
)
def test_missing_id_raises_file_not_found(fs, call):
    """bsb-hdf5 raised KeyError for missing ids."""
    fs.store("other", id="other")
    with pytest.raises(FileNotFoundError) as info:
        call(fs)
    assert isinstance(info.value, StoreNotFoundError)
    assert "nope" in str(info.value)
    assert set(fs.all()) == {"other"}


@serial
def test_duplicate_id_raises_file_exists(fs):
    """bsb-hdf5 raised a bare Exception for duplicates."""
    fs.store("first", id="dup", meta={"v": 1})
    before = snapshot(fs.engine)
    with pytest.raises(FileExistsError) as info:
        fs.store("second", id="dup", meta={"v": 2})
    assert isinstance(info.value, StoreExistsError) and "dup" in str(info.value)
    assert snapshot(fs.engine) == before
    assert fs.load("dup") == ("first", fs.get_meta("dup"))
    assert fs.get_meta("dup")["v"] == 1


@serial
def test_overwrite_replaces(fs):
    fs.store("old text", id="f", meta={"old": True})
    fs.store(b"\x00new\x00", id="f", meta={"new": 1}, overwrite=True)
    content, meta = fs.load("f")
    assert content == b"\x00new\x00"
    assert fs.get_encoding("f") is None
    assert "old" not in meta and meta["new"] == 1
    assert meta["content_sha256"] == hashlib.sha256(b"\x00new\x00").hexdigest()
    assert set(fs.all()) == {"f"}


@serial
def test_overwrite_of_missing_id_creates(fs):
    assert fs.store("x", id="fresh", overwrite=True) == "fresh"
    assert fs.load("fresh")[0] == "x"


class Unjsonable:
    pass


def _self_containing():
    d: dict = {}
    d["me"] = d
    return d


BAD_STORES = {
    "int content": dict(content=123),
    "None content": dict(content=None),
    "ndarray content": dict(content=np.zeros(3, np.uint8)),
    "list content": dict(content=["a"]),
    "slash id": dict(content="x", id="a/b"),
    "empty id": dict(content="x", id=""),
    "dotdot id": dict(content="x", id=".."),
    "int id": dict(content="x", id=5),
    "nul id": dict(content="x", id="a\0b"),
    "surrogate id": dict(content="x", id="a\udc80"),
    "unknown encoding": dict(content="x", encoding="no-such-codec"),
    "binary codec": dict(content="x", encoding="base64"),
    # Was bug empty-encoding: Python encodes "" and decodes b"" without a lookup.
    "unknown encoding, empty bytes": dict(content=b"", encoding="nope"),
    "unknown encoding, empty text": dict(content="", encoding="nope"),
    "binary codec, empty bytes": dict(content=b"", encoding="base64"),
    "str-to-str codec, empty bytes": dict(content=b"", encoding="rot13"),
    "nul in encoding": dict(content=b"", encoding="utf\0-8"),
    "int encoding": dict(content="x", encoding=8),
    "unencodable text": dict(content="é", encoding="ascii"),
    "undecodable bytes": dict(content=b"\xff\xfe\xfa", encoding="utf-8"),
    "object in meta": dict(content="x", meta={"x": Unjsonable()}),
    "int meta key": dict(content="x", meta={1: "a"}),
    "meta not a mapping": dict(content="x", meta="text"),
    "reserved meta key": dict(content="x", meta={"__ndarray__": 1}),
    "complex array meta": dict(content="x", meta={"c": np.array([1j])}),
    "object array meta": dict(content="x", meta={"o": np.array([None])}),
    "bytes in meta": dict(content="x", meta={"b": b"raw"}),
    "cyclic meta": dict(content="x", meta=_self_containing()),
}


@serial
@pytest.mark.parametrize("kwargs", list(BAD_STORES.values()), ids=list(BAD_STORES))
def test_bad_input_leaves_store_unchanged(fs, kwargs):
    fs.store("existing", id="existing", meta={"a": 1})
    before = snapshot(fs.engine)
    with pytest.raises(InvalidInputError) as info:
        fs.store(**kwargs)
    assert isinstance(info.value, ValueError) and str(info.value)
    assert snapshot(fs.engine) == before


@serial
@pytest.mark.parametrize("bad", ["a/b", "", 3, None, "x\0"])
def test_bad_ids_rejected_by_every_method(fs, bad):
    for call in (fs.load, fs.remove, fs.has, fs.get_meta, fs.get_mtime, fs.get_encoding):
        with pytest.raises(InvalidInputError):
            call(bad)


@serial
def test_failure_while_staging_publishes_nothing(fs, monkeypatch):
    fs.store("old", id="f")
    before = snapshot(fs.engine)
    real = files_module._stage_file

    def stage_then_fail(*args, **kwargs):
        real(*args, **kwargs)
        raise RuntimeError("simulated failure after staging")

    monkeypatch.setattr(files_module, "_stage_file", stage_then_fail)
    with pytest.raises(RuntimeError, match="simulated"):
        fs.store("new", id="f", overwrite=True)
    with pytest.raises(RuntimeError, match="simulated"):
        fs.store_active_config({"a": 1})
    assert snapshot(fs.engine) == before
    assert fs.load("f")[0] == "old"


@serial
def test_read_only_refuses_writes(fs, engine):
    id = fs.store("x", id="x")
    before = snapshot(engine)
    with engine.read_only():
        with pytest.raises(ReadOnlyError):
            fs.store("y")
        with pytest.raises(ReadOnlyError):
            fs.store("z", id="x", overwrite=True)
        with pytest.raises(ReadOnlyError):
            fs.remove(id)
        with pytest.raises(ReadOnlyError):
            fs.store_active_config({"a": 1})
        assert fs.load(id)[0] == "x"
    assert snapshot(engine) == before
    fs.store("y", id="y")  # writable again after the block
    assert fs.has("y")


# ------------------------------------------------------------- active config
def test_active_config_replaces_previous(fs, engine):
    """Runs under mpiexec too: store_active_config is collective."""
    with pytest.raises(MissingActiveConfigError):
        fs.load_active_config()
    assert fs.active_config_id() is None
    tree_a = {"name": "A", "cells": {"x": [1, 2]}}
    id_a = fs.store_active_config(tree_a, meta={"note": "first"})
    tree, meta = fs.load_active_config()
    assert tree == tree_a
    assert meta["active_config"] is True and meta["note"] == "first"
    assert fs.active_config_id() == id_a
    assert fs.get_encoding(id_a) == "utf-8"
    assert json.loads(fs.load(id_a)[0]) == tree_a

    state = engine.state_id
    id_b = fs.store_active_config({"name": "B"})
    assert engine.state_id == state + 1, "old removal and new store: one transaction"
    active = [i for i, m in fs.all().items() if m.get("active_config")]
    assert active == [id_b] and id_b != id_a
    assert not fs.has(id_a)
    assert fs.load_active_config()[0] == {"name": "B"}
    assert "note" not in fs.load_active_config()[1]


@serial
def test_active_config_is_forced_and_keeps_other_files(fs):
    plain = fs.store("not a config", meta={"source": "x"})
    id = fs.store_active_config({"t": 1}, meta={"active_config": False, "k": "v"})
    meta = fs.get_meta(id)
    assert meta["active_config"] is True and meta["k"] == "v"
    assert next(iter(meta)) == "active_config"
    fs.store_active_config({"t": 2})
    assert fs.has(plain) and fs.load(plain)[0] == "not a config"
    assert len(fs.all()) == 2


@serial
def test_missing_active_config_with_other_files(fs):
    fs.store("{}", meta={"active_config": False})
    with pytest.raises(MissingActiveConfigError) as info:
        fs.load_active_config()
    assert isinstance(info.value, LookupError)


@serial
@pytest.mark.parametrize(
    "tree, meta",
    [({"a": Unjsonable()}, None), ({"a": 1}, {"x": Unjsonable()}), ({"a": 1}, "m")],
    ids=["tree", "meta", "meta type"],
)
def test_bad_active_config_leaves_store_unchanged(fs, tree, meta):
    fs.store_active_config({"ok": True})
    before = snapshot(fs.engine)
    with pytest.raises(InvalidInputError):
        fs.store_active_config(tree, meta)
    assert snapshot(fs.engine) == before
    assert fs.load_active_config()[0] == {"ok": True}


# ------------------------------------------------------------ identity, processes
@serial
def test_equality_and_hash(engine, tmp_path):
    other_same_root = HDF5Engine(engine.root)
    assert engine.files == other_same_root.files
    assert hash(engine.files) == hash(other_same_root.files)
    assert engine.files == FileStore(engine)
    assert engine.files is engine.files
    elsewhere = HDF5Engine(tmp_path / "other.h5")
    elsewhere.create()
    assert engine.files != elsewhere.files
    assert engine.files != Resource(engine, "files")
    assert engine.files != engine
    assert len({engine.files, other_same_root.files, elsewhere.files}) == 2


CHILD = textwrap.dedent(
    """
    import sys
    from bsb_store.core import HDF5Engine

    fs = HDF5Engine(sys.argv[1]).files
    content, meta = fs.load(sys.argv[2])
    print(content.hex(), meta["who"])
    fs.store(b"from child\\0", id="child", meta={"who": "child"})
    """
)


@serial
def test_other_process_sees_stored_files(fs, engine):
    fs.store(b"from parent\0\0", id="parent", meta={"who": "parent"})
    assert not fs.has("child")  # the parent now holds a cached read handle
    out = subprocess.run(
        [sys.executable, "-c", CHILD, engine.root, "parent"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    hex_content, who = out.stdout.split()
    assert bytes.fromhex(hex_content) == b"from parent\0\0" and who == "parent"
    assert fs.has("child")
    assert fs.load("child") == (b"from child\0", fs.get_meta("child"))
    assert fs.get_meta("child")["who"] == "child"
