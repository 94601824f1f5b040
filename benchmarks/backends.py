"""The engines under test, each behind the same small interface.

* ``floor``: plain h5py holding one file open, writing the same bytes into flat growable
  datasets with an in-memory chunk index (written once, at close). No locks, no flushes
  per call, no crash safety: the lower bound of any HDF5 engine on this machine.
* ``store``: bsb-store through bsb-core's ``Storage("store", root, comm)`` API.
* ``hdf5``: bsb-hdf5 8.x through ``Storage("hdf5", root, comm)``.
* ``store-core``: bsb-store's standalone core API (``bsb_store.HDF5Engine``, numpy in,
  numpy out), without bsb-core. Used in place of ``store`` while the plugin is not
  installed, and on request (``--engines``) to separate plugin from core costs.

A workload only calls the methods of :class:`Backend`; what it times is the backend
call, never the data generation or the opening of a store.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import h5py
import numpy as np

from .common import MorphologySpec, tree_bytes

CELLS = "cell_a"
TARGETS = "cell_b"
TAG = "cell_a_to_cell_b"
#: Rows per read when the floor iterates a set (bsb-store's batch size too).
ITER_ROWS = 2**18


class _CellType:
    """The part of a bsb ``CellType`` that the storage API needs: a name."""

    def __init__(self, name: str):
        self.name = name

    def __repr__(self) -> str:
        return f"<cell type {self.name}>"


class Backend:
    """One engine under test. ``h`` is whatever :meth:`create`/:meth:`open` return."""

    name = "?"
    #: How many times the engine stores each connection (both BSB directions).
    directions = 1

    def describe(self) -> str:
        return self.name

    def warm_up(self, path: str, comm: Any = None) -> None:
        """Pay one-off costs (imports, plugin discovery) outside any timing."""
        h = self.create(path, comm)
        self.close(h)

    def create(self, path: str, comm: Any = None) -> Any:
        raise NotImplementedError

    def open(self, path: str, comm: Any = None) -> Any:
        raise NotImplementedError

    def close(self, h: Any) -> None:
        """Finish: merge what is pending and release handles."""

    def write_scope(self, h: Any) -> Any:
        """The engine's batched-write context (bsb's ``Storage.write_scope()``)."""
        return contextlib.nullcontext()

    def store_bytes(self, path: str) -> int:
        """Bytes on disk of the store at ``path`` (root plus sidecars)."""
        return tree_bytes(path)

    # placement
    def append_positions(self, h: Any, chunk: Any, positions: np.ndarray) -> None:
        raise NotImplementedError

    def count_cells(self, h: Any) -> int:
        raise NotImplementedError

    def load_positions(self, h: Any, chunks: list | None = None) -> np.ndarray:
        raise NotImplementedError

    def label(self, h: Any, labels: list[str], cells: np.ndarray) -> None:
        raise NotImplementedError

    def get_labelled(self, h: Any, labels: list[str]) -> np.ndarray:
        raise NotImplementedError

    # connectivity
    def connect(self, h: Any, src: Any, dst: Any, s: np.ndarray, t: np.ndarray) -> None:
        raise NotImplementedError

    def count_connections(self, h: Any) -> int:
        raise NotImplementedError

    def load_connections(self, h: Any) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def load_local(self, h: Any, chunk: Any) -> tuple[np.ndarray, ...]:
        raise NotImplementedError

    def iterate_blocks(self, h: Any) -> int:
        raise NotImplementedError

    def iter_connections(self, h: Any) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        raise NotImplementedError

    # morphologies
    def make_morphology(self, spec: MorphologySpec) -> Any:
        return spec

    def save_morphology(self, h: Any, name: str, morphology: Any) -> None:
        raise NotImplementedError

    def load_morphology(self, h: Any, name: str) -> Any:
        raise NotImplementedError


# --------------------------------------------------------------------------- floor
class _FloorHandle:
    def __init__(self, f: h5py.File, writable: bool):
        self.f = f
        self.writable = writable
        self.pos: h5py.Dataset | None = f.get(f"placement/{CELLS}/position")
        self.src: h5py.Dataset | None = f.get(f"connectivity/{TAG}/src_locs")
        self.dst: h5py.Dataset | None = f.get(f"connectivity/{TAG}/dst_locs")
        # chunk id, start, rows / source id, destination id, start, rows
        self.pos_index = _read_index(f, f"placement/{CELLS}/index", 3)
        self.conn_index = _read_index(f, f"connectivity/{TAG}/index", 4)
        self.label_bits: dict[str, int] = {}


def _read_index(f: h5py.File, path: str, width: int) -> list[tuple[int, ...]]:
    ds = f.get(path)
    return [] if ds is None else [tuple(r) for r in ds[()].tolist()]


def _growable(f: h5py.File, path: str, dtype: Any, width: int) -> h5py.Dataset:
    # 2**14 rows of 24 bytes: 384 KiB HDF5 chunks, a usual choice for (n, 3) columns.
    return f.create_dataset(
        path, (0, width), dtype=dtype, maxshape=(None, width), chunks=(2**14, width)
    )


def _append(ds: h5py.Dataset, rows: np.ndarray) -> int:
    start = ds.shape[0]
    ds.resize(start + len(rows), axis=0)
    ds[start:] = rows
    return start


class FloorBackend(Backend):
    name = "floor"

    def describe(self) -> str:
        return f"plain h5py {h5py.__version__} (HDF5 {h5py.version.hdf5_version}), one open file"

    def create(self, path: str, comm: Any = None) -> _FloorHandle:
        f = h5py.File(path, "w")
        f.create_group(f"placement/{CELLS}")
        f.create_group(f"connectivity/{TAG}")
        f.create_group("morphologies")
        return _FloorHandle(f, True)

    def open(self, path: str, comm: Any = None) -> _FloorHandle:
        return _FloorHandle(h5py.File(path, "r+"), True)

    def close(self, h: _FloorHandle) -> None:
        if not h.f:
            return
        if h.writable and h.f.mode != "r":
            for path, index, width in (
                (f"placement/{CELLS}/index", h.pos_index, 3),
                (f"connectivity/{TAG}/index", h.conn_index, 4),
            ):
                if path in h.f:
                    del h.f[path]
                h.f.create_dataset(
                    path, data=np.asarray(index, np.int64).reshape(-1, width)
                )
        h.f.close()

    # placement
    def append_positions(self, h, chunk, positions):
        if h.pos is None:
            h.pos = _growable(h.f, f"placement/{CELLS}/position", np.float64, 3)
        start = _append(h.pos, positions)
        h.pos_index.append((int(chunk.id), start, len(positions)))

    def count_cells(self, h):
        h.f.flush()
        return h.pos.shape[0]

    def load_positions(self, h, chunks=None):
        if chunks is None:
            return h.pos[()]
        ids = {int(c.id) for c in chunks}
        parts = [h.pos[s : s + n] for cid, s, n in h.pos_index if cid in ids]
        return np.concatenate(parts) if parts else np.empty((0, 3))

    def label(self, h, labels, cells):
        path = f"placement/{CELLS}/labels"
        ds = h.f.get(path)
        if ds is None:
            ds = h.f.create_dataset(path, data=np.zeros(h.pos.shape[0], np.int64))
        values = ds[()]
        bits = 0
        for label in labels:
            bits |= 1 << h.label_bits.setdefault(label, len(h.label_bits))
        values[cells] |= bits
        ds[:] = values

    def get_labelled(self, h, labels):
        bits = 0
        for label in labels:
            bits |= 1 << h.label_bits[label]
        return np.flatnonzero(h.f[f"placement/{CELLS}/labels"][()] & bits)

    # connectivity
    def connect(self, h, src, dst, s, t):
        if h.src is None:
            h.src = _growable(h.f, f"connectivity/{TAG}/src_locs", np.int64, 3)
            h.dst = _growable(h.f, f"connectivity/{TAG}/dst_locs", np.int64, 3)
        start = _append(h.src, s)
        _append(h.dst, t)
        h.conn_index.append((int(src.id), int(dst.id), start, len(s)))

    def count_connections(self, h):
        h.f.flush()
        return h.src.shape[0]

    def load_connections(self, h):
        return h.src[()], h.dst[()]

    def load_local(self, h, chunk):
        cid = int(chunk.id)
        rows = [(d, s, n) for c, d, s, n in h.conn_index if c == cid]
        lo, hi = rows[0][1], rows[-1][1] + rows[-1][2]  # blocks are contiguous
        gids = np.repeat([d for d, _, _ in rows], [n for _, _, n in rows])
        return h.src[lo:hi], gids.astype(np.int64), h.dst[lo:hi]

    def iterate_blocks(self, h):
        rows = 0
        for direction in ("inc", "out"):
            key = (lambda b: (b[1], b[0])) if direction == "inc" else (lambda b: b[:2])
            for _, _, s, n in sorted(h.conn_index, key=key):
                a, _ = h.src[s : s + n], h.dst[s : s + n]
                rows += len(a)
        return rows

    def iter_connections(self, h):
        total = h.src.shape[0]
        for lo in range(0, total, ITER_ROWS):
            hi = min(total, lo + ITER_ROWS)
            yield h.src[lo:hi], h.dst[lo:hi]

    # morphologies
    def save_morphology(self, h, name, morphology: MorphologySpec):
        g = h.f.create_group(f"morphologies/{name}")
        g.create_dataset("points", data=morphology.points)
        g.create_dataset("radii", data=morphology.radii)
        g.create_dataset("labels", data=np.zeros(len(morphology.radii), np.int64))
        g.create_dataset("branch_ends", data=morphology.branch_ends)
        g.create_dataset("parents", data=morphology.parents)

    def load_morphology(self, h, name):
        g = h.f[f"morphologies/{name}"]
        return {
            k: g[k][()] for k in ("points", "radii", "labels", "branch_ends", "parents")
        }


# ------------------------------------------------------------- bsb Storage API
class _StorageHandle:
    def __init__(self, storage: Any, create: bool):
        self.storage = storage
        self.pre, self.post = _CellType(CELLS), _CellType(TARGETS)
        if create:
            self.ps = storage.require_placement_set(self.pre)
            storage.require_placement_set(self.post)
            # bsb-core's Scaffold passes (pre, post, tag) positionally.
            self.cs = storage.require_connectivity_set(self.pre, self.post, TAG)
        else:
            self.ps = storage.get_placement_set(self.pre)
            self.cs = storage.get_connectivity_set(TAG)


class StorageBackend(Backend):
    """An engine driven through bsb-core's ``bsb.storage.Storage``."""

    directions = 2

    def __init__(self, engine: str):
        self.name = engine
        self.engine = engine

    def describe(self) -> str:
        import importlib.metadata as md

        dist = {"store": "bsb-store", "hdf5": "bsb-hdf5"}.get(self.engine, self.engine)
        with contextlib.suppress(md.PackageNotFoundError):
            dist = f"{dist} {md.version(dist)}"
        return f"{dist} via bsb-core {md.version('bsb-core')} Storage('{self.engine}')"

    def _storage(self, path: str, comm: Any) -> Any:
        from bsb.storage import Storage

        return Storage(self.engine, path, comm)

    def create(self, path, comm=None):
        return _StorageHandle(self._storage(path, comm), create=True)

    def open(self, path, comm=None):
        return _StorageHandle(self._storage(path, comm), create=False)

    def close(self, h):
        # bsb's Storage has no close(); bsb-store's engine merges its shard on close
        # (it would at interpreter exit otherwise), bsb-hdf5 holds nothing open.
        engine = h.storage._engine
        if hasattr(engine, "close"):
            engine.close()

    def write_scope(self, h):
        return h.storage.write_scope()

    def store_bytes(self, path):
        total = tree_bytes(path)
        for extra in (path + ".lock", path + ".shards"):
            total += tree_bytes(extra)
        return total

    # placement
    def append_positions(self, h, chunk, positions):
        h.ps.append_data(chunk, positions)

    def count_cells(self, h):
        return len(h.ps)

    def load_positions(self, h, chunks=None):
        if chunks is None:
            h.ps.clear_chunk_filter()
        else:
            h.ps.set_chunk_filter(chunks)
        return h.ps.load_positions()

    def label(self, h, labels, cells):
        h.ps.label(labels, cells)

    def get_labelled(self, h, labels):
        return h.ps.get_labelled(labels)

    # connectivity
    def connect(self, h, src, dst, s, t):
        h.cs.chunk_connect(src, dst, s, t)

    def count_connections(self, h):
        return len(h.cs)

    def load_connections(self, h):
        pre, post = [], []
        for _, _, _, (a, b) in h.cs.flat_iter_connections("out"):
            pre.append(a)
            post.append(b)
        return np.concatenate(pre), np.concatenate(post)

    def load_local(self, h, chunk):
        return h.cs.load_local_connections("out", chunk)

    def iterate_blocks(self, h):
        rows = 0
        cs = h.cs
        for direction in ("inc", "out"):
            for lchunk in cs.get_local_chunks(direction):
                for gchunk in cs.get_global_chunks(direction, lchunk):
                    a, _ = cs.load_block_connections(direction, lchunk, gchunk)
                    rows += len(a)
        return rows

    def iter_connections(self, h):
        for _, _, _, data in h.cs.flat_iter_connections("out"):
            yield data

    # morphologies
    def make_morphology(self, spec):
        from bsb.morphologies import Branch, Morphology

        branches = []
        start = 0
        for end, parent in zip(spec.branch_ends, spec.parents):
            b = Branch(spec.points[start:end], spec.radii[start:end])
            if parent >= 0:
                branches[parent].attach_child(b)
            branches.append(b)
            start = end
        return Morphology([branches[0]])

    def save_morphology(self, h, name, morphology):
        h.storage.morphologies.save(name, morphology)

    def load_morphology(self, h, name):
        return h.storage.morphologies.load(name)


# ------------------------------------------------------------ bsb-store's core
class _CoreHandle:
    def __init__(self, engine: Any, create: bool):
        from bsb_store import ConnectivitySet, PlacementSet

        self.engine = engine
        if create:
            self.ps = PlacementSet.require(engine, CELLS)
            self.cs = ConnectivitySet.require(engine, CELLS, TARGETS, TAG)
        else:
            self.ps = PlacementSet(engine, CELLS)
            self.cs = ConnectivitySet(engine, TAG)


class CoreStoreBackend(StorageBackend):
    """bsb-store's standalone core API (no bsb-core objects in or out)."""

    def __init__(self):
        self.name = "store-core"
        self.engine = "store"

    def describe(self):
        import bsb_store

        return f"bsb-store {bsb_store.__version__} core API (HDF5Engine)"

    def create(self, path, comm=None):
        from bsb_store import HDF5Engine

        engine = HDF5Engine(path, comm)
        engine.create()
        return _CoreHandle(engine, create=True)

    def open(self, path, comm=None):
        from bsb_store import HDF5Engine

        return _CoreHandle(HDF5Engine(path, comm), create=False)

    def close(self, h):
        h.engine.close()

    def write_scope(self, h):
        return h.engine.write_scope()

    def make_morphology(self, spec):
        from bsb_store import MorphologyData

        return MorphologyData(
            points=spec.points,
            radii=spec.radii,
            branch_ends=spec.branch_ends,
            parents=spec.parents,
        )

    def save_morphology(self, h, name, morphology):
        h.engine.morphologies.save(name, morphology)

    def load_morphology(self, h, name):
        return h.engine.morphologies.load(name)


# -------------------------------------------------------------------- registry
ALL = ("floor", "store", "hdf5", "store-core")


def plugin_available(engine: str) -> bool:
    """Whether bsb-core lists ``engine`` among its storage engines."""
    try:
        from bsb.storage import get_engines

        return engine in get_engines()
    except Exception:
        return False


def get_backend(name: str) -> Backend:
    if name == "floor":
        return FloorBackend()
    if name == "store-core":
        return CoreStoreBackend()
    if name in ("store", "hdf5"):
        return StorageBackend(name)
    raise ValueError(f"Unknown backend {name!r}; choose from {', '.join(ALL)}.")


def resolve(names: list[str]) -> tuple[dict[str, Backend], list[str]]:
    """Backends for ``names``; ``store`` falls back to ``store-core`` when the plugin
    is not installed. Returns the backends and notes on what was substituted."""
    out: dict[str, Backend] = {}
    notes = []
    for name in names:
        if name in ("store", "hdf5") and not plugin_available(name):
            if name == "store":
                notes.append(
                    "bsb-core does not list the 'store' engine: measured bsb-store "
                    "through its core API instead (column 'store-core')."
                )
                out.setdefault("store-core", CoreStoreBackend())
            else:
                notes.append("bsb-hdf5 is not installed: column 'hdf5' skipped.")
            continue
        out[name] = get_backend(name)
    return out, notes


def remove_store(path: str) -> None:
    """Delete a benchmark store and its sidecars (best effort)."""
    import shutil

    for p in (path, path + ".lock"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(p)
    shutil.rmtree(path + ".shards", ignore_errors=True)
