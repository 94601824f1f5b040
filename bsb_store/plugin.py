"""bsb-store as a storage engine of the BSB framework (entry point ``store``).

bsb-core finds an engine by scanning this module's namespace: ``StorageNode`` plus the
FIRST class that subclasses each interface of :mod:`bsb.storage.interfaces`. So this
module defines exactly one subclass of each (:class:`Engine`, :class:`FileStore`,
:class:`PlacementSet`, :class:`MorphologyRepository`, :class:`ConnectivitySet`), and
imports bsb's modules, never bsb's or other engines' classes, into its namespace.

Every adapter inherits the core class first and the bsb interface second; its own code
only converts types at the boundary (bsb ``Chunk`` <-> core ``Chunk``, ``CellType`` ->
name, ``MorphologySet`` <-> (indices, names), ``Morphology`` <-> ``MorphologyData``,
``RotationSet`` -> angles, ``Configuration`` <-> tree dict) and translates the core's
exceptions into classes that subclass both bsb's exception and the core's.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import json
import os
import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import numpy as np
from bsb import _encoding as _bsb_encoding
from bsb import config as _bsb_config
from bsb import exceptions as _bsb_exc
from bsb import morphologies as _bsb_morphologies
from bsb.services import mpi as _bsb_mpi
from bsb.storage import _chunks as _bsb_chunks
from bsb.storage import interfaces as _bsb_ifaces
from bsb.storage import provenance as _bsb_provenance

from . import __version__
from . import exceptions as _exc
from .core import chunks as _core_chunks
from .core import engine as _core_engine
from .core.resources import connectivity as _core_cs
from .core.resources import files as _core_files
from .core.resources import morphologies as _core_mr
from .core.resources import placement as _core_ps
from .core.resources import validate as _core_validate

__all__ = [
    "ChunkError",
    "ChunkSizeError",
    "ConnectivitySet",
    "DatasetExistsError",
    "DatasetNotFoundError",
    "Engine",
    "FileStore",
    "LabellingError",
    "LocationOutOfBoundsError",
    "MissingActiveConfigError",
    "MissingMorphologyError",
    "MorphologyExistsError",
    "MorphologyRepository",
    "PlacementSet",
    "StorageNode",
]

ENGINE_NAME = "store"


# ---------------------------------------------------------------------- exceptions
class DatasetNotFoundError(_bsb_exc.DatasetNotFoundError, _exc.DatasetNotFoundError):
    """A placement or connectivity set, or data inside it, does not exist."""


class DatasetExistsError(_bsb_exc.DatasetExistsError, _exc.DatasetExistsError):
    """A placement or connectivity set that is being created already exists."""


class LabellingError(_bsb_exc.LabellingError, _exc.LabellingError):
    """Cell ids or a mask given to a labelling call do not fit the placement set."""


class MissingMorphologyError(
    _bsb_exc.MissingMorphologyError,
    _bsb_exc.MorphologyRepositoryError,
    _exc.MorphologyNotFoundError,
):
    """A morphology name is not in the repository (``load``, ``get_meta``,
    ``preload`` and ``remove``)."""


class MorphologyExistsError(
    _bsb_exc.MorphologyRepositoryError, _exc.MorphologyExistsError
):
    """A morphology is saved under a taken name without ``overwrite``."""


class MissingActiveConfigError(
    _bsb_exc.MissingActiveConfigError, _exc.MissingActiveConfigError
):
    """The file store holds no active configuration."""


class ChunkError(_bsb_exc.ChunkError, _exc.ChunkError):
    """A chunk coordinate is out of the int16 range, or a chunk is malformed."""


class ChunkSizeError(_bsb_exc.ChunkError, _exc.ChunkSizeError):
    """A chunk's size disagrees with the chunk size the store already uses."""


class LocationOutOfBoundsError(_bsb_exc.ConnectivityError, _exc.LocationOutOfBoundsError):
    """``connect()`` got cell ids outside the placement set views (nothing stored)."""


# Most specific core class first: the first match decides.
_TRANSLATIONS: tuple[tuple[type[Exception], type[Exception]], ...] = (
    (_exc.DatasetNotFoundError, DatasetNotFoundError),
    (_exc.DatasetExistsError, DatasetExistsError),
    (_exc.LabellingError, LabellingError),
    (_exc.MorphologyNotFoundError, MissingMorphologyError),
    (_exc.MorphologyExistsError, MorphologyExistsError),
    (_exc.MissingActiveConfigError, MissingActiveConfigError),
    (_exc.ChunkSizeError, ChunkSizeError),
    (_exc.ChunkError, ChunkError),
    (_exc.LocationOutOfBoundsError, LocationOutOfBoundsError),
)


def _translate(e: BaseException) -> BaseException:
    """The plugin exception for a core exception (``e`` itself if none applies)."""
    for core_cls, plugin_cls in _TRANSLATIONS:
        if isinstance(e, core_cls) and not isinstance(e, plugin_cls):
            details = dict(getattr(e, "details", {}) or {})
            new = plugin_cls(getattr(e, "msg", None) or str(e), **details)
            return new.with_traceback(e.__traceback__)
    return e


@contextlib.contextmanager
def _translating() -> Iterator[None]:
    try:
        yield
    except _exc.StoreError as e:
        new = _translate(e)
        if new is e:
            raise
        raise new from None


def _translated(fn):
    """Wrap a core method so that its exceptions reach bsb as the plugin's types."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with _translating():
            return fn(*args, **kwargs)

    return wrapper


# -------------------------------------------------------------------- conversions
def _bsb_chunk(chunk: Any) -> _bsb_chunks.Chunk:
    """core Chunk -> bsb Chunk (an int16 ndarray; an undefined size becomes NaN).
    A bsb Chunk passes through unchanged."""
    if isinstance(chunk, _bsb_chunks.Chunk):
        return chunk
    return _bsb_chunks.Chunk(chunk.coords, chunk.size)


def _bsb_chunks_of(chunks) -> list[_bsb_chunks.Chunk] | None:
    return None if chunks is None else [_bsb_chunk(c) for c in chunks]


def _name(obj: Any) -> str:
    """A CellType (or anything named) -> its name."""
    return getattr(obj, "name", obj)


def _rows_of_positions(positions: Any) -> Any:
    """bsb accepts a 1-D ``[x]`` as one cell (broadcast to ``[[x, x, x]]``)."""
    if positions is None:
        return None
    arr = np.asarray(positions)
    if arr.ndim == 1 and arr.size == 1:
        return np.full((1, 3), arr[0], dtype=float)
    return arr


def _rotation_angles(rotations: Any) -> Any:
    """RotationSet, or a list of scipy Rotations, -> (n, 3) Euler angles (degrees)."""
    if rotations is None or isinstance(rotations, np.ndarray):
        return rotations
    if not isinstance(rotations, _bsb_morphologies.RotationSet):
        rotations = _bsb_morphologies.RotationSet(rotations)
    return np.asarray(rotations)


def _morphology_data(morphology: _bsb_morphologies.Morphology) -> _core_mr.MorphologyData:
    """bsb Morphology -> core MorphologyData (optimises the morphology onto shared
    buffers in branch order, as bsb-hdf5 does)."""
    morphology.optimize(force=True)
    branches = morphology.branches
    shared = morphology._shared
    index = {id(b): i for i, b in enumerate(branches)}
    parents = [-1 if b.parent is None else index[id(b.parent)] for b in branches]
    labels = np.asarray(shared._labels, dtype=np.int64)
    sets = {
        int(k): frozenset(str(x) for x in v) for k, v in shared._labels.labels.items()
    }
    if sets.get(0) != frozenset():
        # The core wants id 0 to be the empty set: renumber the label sets.
        lut: dict[int, int] = {}
        renumbered: dict[int, frozenset[str]] = {0: frozenset()}
        for k in sorted(sets):
            lut[k] = len(renumbered) if sets[k] else 0
            renumbered.setdefault(lut[k], sets[k])
        sets = renumbered
        labels = np.asarray([lut.get(int(v), int(v)) for v in labels], dtype=np.int64)
    return _core_mr.MorphologyData(
        points=shared._points,
        radii=shared._radii,
        labels=labels,
        labelsets=sets,
        properties=dict(shared._prop),
        branch_ends=np.cumsum([len(b) for b in branches], dtype=np.int64),
        parents=np.asarray(parents, dtype=np.int64),
        meta=dict(morphology.meta or {}),
    )


def _owned(arr: np.ndarray) -> np.ndarray:
    """An array owning its memory (branch views must have it as their ``base``)."""
    return arr if arr.base is None else arr.copy()


def _depth_first(parents: np.ndarray) -> list[int]:
    """bsb's branch order (``Morphology.branches``): each root in turn, depth first,
    children in the order they were attached."""
    children: list[list[int]] = [[] for _ in parents]
    roots = []
    for i, p in enumerate(parents):
        (roots if p < 0 else children[p]).append(i)
    order, stack = [], roots[::-1]
    while stack:
        i = stack.pop()
        order.append(i)
        stack.extend(children[i][::-1])
    return order


def _morphology(data: _core_mr.MorphologyData) -> _bsb_morphologies.Morphology:
    """core MorphologyData -> bsb Morphology built on shared buffers.

    bsb expects the shared buffers in ``Morphology.branches`` order (depth first); the
    core allows any order in which parents precede children, so rows are permuted when
    the two differ."""
    order = _depth_first(data.parents)
    starts, counts = data.branch_starts, data.branch_counts
    if order == list(range(len(order))):
        rows = slice(None)
    else:
        rows = np.concatenate(
            [np.arange(starts[i], starts[i] + counts[i]) for i in order] or [[]]
        ).astype(np.int64)
    points, radii = _owned(data.points[rows]), _owned(data.radii[rows])
    labels = _bsb_encoding.EncodedLabels(
        len(points),
        buffer=np.array(data.labels[rows], dtype=int),
        labels={k: set(v) for k, v in data.labelsets.items()},
    )
    props = {k: _owned(v[rows]) for k, v in data.properties.items()}
    roots, made, ptr = [], {}, 0
    for i in order:
        part = slice(ptr, ptr + int(counts[i]))
        ptr = part.stop
        branch = _bsb_morphologies.Branch(
            points[part],
            radii[part],
            labels[part],
            {k: v[part] for k, v in props.items()},
        )
        made[i] = branch
        parent = int(data.parents[i])
        if parent < 0:
            roots.append(branch)
        else:
            made[parent].attach_child(branch)
    return _bsb_morphologies.Morphology(
        roots, data.meta, shared_buffers=(points, radii, labels, props)
    )


def _json_default(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"Cannot store {type(value).__name__} {value!r} as JSON.")


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


# --------------------------------------------------------------------- the engine
def _default_root() -> str:
    """A new, unique root path in the working directory (one per call)."""
    stamp = datetime.now().strftime("%Y_%m_%d")
    return os.path.abspath(f"scaffold_network_{stamp}_{uuid.uuid4().hex[:12]}.h5")


@_bsb_config.node
class StorageNode(_bsb_ifaces.StorageNode):
    root = _bsb_config.attr(type=str, default=_default_root, call_default=True)
    """Path of the root ``.h5`` file. Defaults to a new unique file in the working
    directory."""


class Engine(_core_engine.HDF5Engine, _bsb_ifaces.Engine):
    """The store's root file, as a bsb storage engine.

    Built by bsb as ``Engine(root, MPIService)`` (collective); ``Storage`` sets
    ``_format`` afterwards and binds the ``files``/``morphologies`` singletons.
    """

    _format = ENGINE_NAME

    def __init__(self, root: Any, comm: Any = None):
        with _translating():
            super().__init__(root, comm)

    # ------------------------------------------------------------------ identity
    def __eq__(self, other: object) -> bool:
        return (
            getattr(other, "_format", None) == self._format
            and getattr(other, "_root", None) == self._root
        )

    def __hash__(self) -> int:
        return hash(self._root)

    def set_comm(self, comm: Any) -> None:
        """Replace the communicator (a bsb MPIService or an mpi4py communicator)."""
        self._comm = _core_engine.make_comm(comm)

    def read_only(self) -> Any:
        """Read-only mode (bsb's simulators read under it): writes raise; every append
        already committed is merged on entry (by the core)."""
        with _translating():
            return super().read_only()

    @property
    def files(self) -> FileStore:
        # A property of the core engine: take the singleton bsb's Storage bound.
        store = self.__dict__.get("files")
        if store is None:
            store = self.__dict__["files"] = FileStore(self)
        return store

    @property
    def morphologies(self) -> MorphologyRepository:
        repo = self.__dict__.get("morphologies")
        if repo is None:
            repo = self.__dict__["morphologies"] = MorphologyRepository(self)
        return repo

    # ---------------------------------------------------------------- provenance
    def _provenance(self) -> dict[str, Any]:
        return _bsb_provenance.build_root_metadata(
            engine_name=ENGINE_NAME, engine_version=__version__, mpi_size=self._comm.size
        )

    @property
    def versions(self) -> dict[str, Any]:
        meta = self.metadata
        return {
            "bsb": meta.get("bsb_core_version") or importlib.metadata.version("bsb-core"),
            "engine": "bsb-store",
            "version": meta.get("engine_version") or __version__,
        }

    def _bump_state(self) -> None:
        """Add 1 to ``state_id`` (every core transaction already does this itself)."""
        if self._readonly:
            return
        with _translating(), self._write() as txn:
            txn.set_attr("store", "state_bumped_at", _bsb_provenance.iso_now())

    # ------------------------------------------------------------------ lifecycle
    @staticmethod
    def recognizes(root: Any, comm: Any = None) -> bool:
        """Whether ``root`` is a bsb-store root; decided on rank 0 of ``comm`` (raw
        mpi4py communicator; None means bsb's default, COMM_WORLD) and broadcast."""
        try:
            return _core_engine.HDF5Engine.recognizes(root, _bsb_mpi.MPIService(comm))
        except Exception:
            return False

    create = _translated(_core_engine.HDF5Engine.create)
    remove = _translated(_core_engine.HDF5Engine.remove)
    move = _translated(_core_engine.HDF5Engine.move)
    copy = _translated(_core_engine.HDF5Engine.copy)
    clear_placement = _translated(_core_engine.HDF5Engine.clear_placement)
    clear_connectivity = _translated(_core_engine.HDF5Engine.clear_connectivity)
    get_chunk_stats = _translated(_core_engine.HDF5Engine.get_chunk_stats)


# ------------------------------------------------------------------- file store
class FileStore(_core_files.FileStore, _bsb_ifaces.FileStore):
    """Whole files with metadata, and the active configuration."""

    def store_active_config(self, config: Any) -> str:
        """Store ``config`` as the one active configuration. Collective."""
        tree = json.loads(json.dumps(config.__tree__(), default=_json_default))
        meta = {
            k: v
            for k, v in (getattr(config, "_meta", None) or {}).items()
            if v is not None and _jsonable(v)
        }
        meta.setdefault(
            "producer",
            {"package": "bsb-core", "version": importlib.metadata.version("bsb-core")},
        )
        with _translating():
            return super().store_active_config(tree, meta)

    def load_active_config(self) -> Any:
        """The active configuration as a bsb ``Configuration`` (``_meta`` set)."""
        from bsb.config import Configuration

        with _translating():
            tree, meta = super().load_active_config()
        cfg = Configuration(**tree)
        cfg._meta = meta
        return cfg


# -------------------------------------------------------------- morphologies
class MorphologyRepository(
    _core_mr.MorphologyRepository, _bsb_ifaces.MorphologyRepository
):
    """Named morphologies; bsb ``Morphology`` in, bsb ``Morphology`` out."""

    def _stored(self, name: str, meta: dict[str, Any]) -> Any:
        return _bsb_ifaces.StoredMorphology(
            name, functools.partial(self.load, name), meta
        )

    def all(self) -> list[Any]:
        with _translating():
            handles = super().all()
        return [self._stored(h.name, h.get_meta()) for h in handles]

    def preload(self, name: str, meta: dict[str, Any] | None = None) -> Any:
        if meta is None:
            meta = self.get_meta(name)
        return self._stored(name, meta)

    def load(self, name: str) -> Any:
        with _translating():
            data = super().load(name)
        return _morphology(data)

    def save(
        self,
        name: str,
        morphology: Any,
        overwrite: bool = False,
        meta: dict[str, Any] | None = None,
        update_meta: bool = True,
    ) -> Any:
        """Store ``morphology``; like bsb-hdf5 it optimises the caller's object and
        sets its ``meta`` ``name``, ``ldc`` and ``mdc``. ``meta`` (bsb's
        ``MorphologyDependencyNode.store_object`` passes one) is merged into it."""
        if meta:
            morphology.meta.update(meta)
        with _translating():
            stored = self._save_owned(name, _morphology_data(morphology), overwrite)
        for key in ("name", "ldc", "mdc"):
            morphology.meta[key] = stored.meta[key]
        return _bsb_ifaces.StoredMorphology(name, lambda: morphology, morphology.meta)

    get_meta = _translated(_core_mr.MorphologyRepository.get_meta)
    remove = _translated(_core_mr.MorphologyRepository.remove)
    set_all_meta = _translated(_core_mr.MorphologyRepository.set_all_meta)
    update_all_meta = _translated(_core_mr.MorphologyRepository.update_all_meta)


# ---------------------------------------------------------------- placement sets
class PlacementSet(_core_ps.PlacementSet, _bsb_ifaces.PlacementSet):
    """The cells of one cell type (``PlacementSet(engine, cell_type)``)."""

    def __init__(self, engine: Engine, cell_type: Any):
        with _translating():
            _core_ps.PlacementSet.__init__(self, engine, _name(cell_type))
        self._type = cell_type
        self._tag = _name(cell_type)
        self._labels = None
        self._morphology_labels = None

    @classmethod
    def create(cls, engine: Engine, cell_type: Any) -> PlacementSet:
        with _translating():
            _core_ps.PlacementSet.create(engine, _name(cell_type))
        return cls(engine, cell_type)

    @classmethod
    def require(cls, engine: Engine, cell_type: Any) -> PlacementSet:
        with _translating():
            _core_ps.PlacementSet.require(engine, _name(cell_type))
        return cls(engine, cell_type)

    # ----------------------------------------------------------------- filters
    def set_label_filter(self, labels: Any) -> None:
        """BSB reads an empty label filter as no filter (like an empty chunk filter;
        bsb-hdf5 does), not as "unlabelled cells only" as the core does."""
        super().set_label_filter(labels if labels else None)
        self._labels = labels

    def get_label_filter(self) -> Any:
        return self._labels

    def set_morphology_label_filter(self, morphology_labels: Any) -> None:
        self._morphology_labels = morphology_labels

    def get_all_chunks(self) -> list[Any]:
        with _translating():
            return _bsb_chunks_of(super().get_all_chunks())

    def get_loaded_chunks(self) -> list[Any]:
        with _translating():
            return _bsb_chunks_of(super().get_loaded_chunks())

    def get_chunk_filter(self) -> list[Any] | None:
        with _translating():
            return _bsb_chunks_of(super().get_chunk_filter())

    # ------------------------------------------------------------------- reads
    def load_rotations(self) -> Any:
        with _translating():
            return _bsb_morphologies.RotationSet(super().load_rotations())

    def load_morphologies(self, allow_empty: bool = False) -> Any:
        """A MorphologySet over the filtered cells (its loaders: the morphologies
        they use), with this set's morphology label filter."""
        labels = self._morphology_labels
        try:
            with _translating():
                indices, names = self.load_morphology_indices()
        except DatasetNotFoundError:
            indices, names = np.empty(0, dtype=int), []
        if not len(indices):
            if not allow_empty:
                raise DatasetNotFoundError(
                    f"No morphology data available in placement set '{self.tag}'."
                )
            return _bsb_morphologies.MorphologySet([], indices.astype(int), labels=labels)
        if np.any(indices < 0):
            raise DatasetNotFoundError(
                f"{int(np.sum(indices < 0))} cells of placement set '{self.tag}' have "
                "no morphology."
            )
        used, inverse = np.unique(indices, return_inverse=True)
        repo = self._engine.morphologies
        loaders = []
        for i in used:
            try:
                loaders.append(repo.preload(names[i]))
            except MissingMorphologyError:
                raise DatasetNotFoundError(
                    f"No metadata found for stored morphology '{names[i]}' used by "
                    f"placement set '{self.tag}'."
                ) from None
        return _bsb_morphologies.MorphologySet(
            loaders, inverse.astype(int), labels=labels
        )

    def __iter__(self) -> Iterator[Any]:
        import itertools

        return itertools.zip_longest(
            self.load_positions(), self.load_morphologies(allow_empty=True)
        )

    # ----------------------------------------------------------------- writes
    def append_data(
        self,
        chunk: Any,
        positions: Any = None,
        morphologies: Any = None,
        rotations: Any = None,
        additional: Any = None,
        count: Any = None,
    ) -> None:
        """Append cells to ``chunk`` (bsb argument order). ``[x]`` is one cell;
        morphologies (a MorphologySet) without rotations get zero rotations."""
        morpho = None
        if morphologies is not None:
            morpho = (morphologies.get_indices(), morphologies._serialize_loaders())
            if rotations is None:
                rotations = np.zeros((len(morphologies), 3))
        with _translating():
            super().append_data(
                chunk,
                positions=_rows_of_positions(positions),
                rotations=_rotation_angles(rotations),
                morphologies=morpho,
                additional=additional,
                count=count,
            )

    remove = _translated(_core_ps.PlacementSet.remove)
    clear = _translated(_core_ps.PlacementSet.clear)
    append_additional = _translated(_core_ps.PlacementSet.append_additional)
    load_ids = _translated(_core_ps.PlacementSet.load_ids)
    load_positions = _translated(_core_ps.PlacementSet.load_positions)
    load_additional = _translated(_core_ps.PlacementSet.load_additional)
    get_chunk_stats = _translated(_core_ps.PlacementSet.get_chunk_stats)
    convert_to_local = _translated(_core_ps.PlacementSet.convert_to_local)

    def _no_cells(self, cells: Any) -> bool:
        """Whether ``cells`` (ids, or a mask of the right length) selects no cell:
        then a labelling call is a no-op and takes no write transaction (which would
        also invalidate every process's read caches)."""
        arr = np.asarray(cells)
        if arr.dtype == bool:
            return not arr.any() and arr.shape == (len(self),)
        return arr.size == 0

    def label(self, labels: Any, cells: Any) -> None:
        if not self._no_cells(cells):
            with _translating():
                super().label(labels, cells)

    def remove_labels(self, labels: Any, cells: Any) -> None:
        if not self._no_cells(cells):
            with _translating():
                super().remove_labels(labels, cells)

    def label_by_mask(self, labels: Any, mask: Any) -> None:
        if np.asarray(mask).dtype != bool or not self._no_cells(mask):
            with _translating():
                super().label_by_mask(labels, mask)

    def remove_labels_by_mask(self, labels: Any, mask: Any) -> None:
        if np.asarray(mask).dtype != bool or not self._no_cells(mask):
            with _translating():
                super().remove_labels_by_mask(labels, mask)

    get_label_mask = _translated(_core_ps.PlacementSet.get_label_mask)
    get_labelled = _translated(_core_ps.PlacementSet.get_labelled)
    __len__ = _translated(_core_ps.PlacementSet.__len__)

    def get_unique_labels(self) -> np.ndarray:
        with _translating():
            sets = super().get_unique_labels()
        out = np.empty(len(sets), dtype=object)
        # bsb's own label-set type: hashable, as bsb-hdf5 returns them.
        out[:] = [_bsb_encoding._lset(s) for s in sets]
        return out


# -------------------------------------------------------------- connectivity sets
def _backmapped(ps: Any, locs: np.ndarray) -> np.ndarray:
    """Map branch/point ids of a morphology-label-filtered view back to the stored
    morphologies (bsb's ``_morpho_backmap``); out-of-bounds cells are left for the
    core's bounds check to report."""
    if not ps._requires_morpho_mapping():
        return locs
    cells = locs[:, 0]
    if len(cells) and (cells.min() < 0 or cells.max() >= len(ps)):
        return locs
    return ps._morpho_backmap(locs)


class _ChunkView:
    """A nested connectivity iterable with bsb Chunks instead of core chunks."""

    def __init__(self, inner: Any):
        self._inner = inner

    def __iter__(self) -> Iterator[Any]:
        for item in self._inner:
            if not isinstance(item, tuple) or len(item) != 2:
                yield item
                continue
            key, value = item
            if isinstance(key, np.ndarray):  # a data block (local_locs, global_locs)
                yield item
                continue
            if isinstance(key, _core_chunks.Chunk):
                key = _bsb_chunk(key)
            if not isinstance(value, tuple):  # a deeper level, not a data block
                value = _ChunkView(value)
            yield key, value


class ConnectivitySet(_core_cs.ConnectivitySet, _bsb_ifaces.ConnectivitySet):
    """The connections between two cell types (``ConnectivitySet(engine, tag)``)."""

    def __init__(self, engine: Engine, tag: Any):
        with _translating():
            _core_cs.ConnectivitySet.__init__(self, engine, tag)
        self.pre_type = None
        self.post_type = None

    @staticmethod
    def _types(pre_type: Any, post_type: Any, tag: Any) -> tuple[Any, Any, Any]:
        # ``Storage.require_connectivity_set(tag, pre, post)`` gets (pre, post, tag)
        # from the Scaffold; accept the documented order too.
        if isinstance(pre_type, str) and tag is not None and not isinstance(tag, str):
            return post_type, tag, pre_type
        return pre_type, post_type, tag

    def _set_types(self, pre_type: Any, post_type: Any) -> ConnectivitySet:
        if not isinstance(pre_type, str):
            self.pre_type = pre_type
        if not isinstance(post_type, str):
            self.post_type = post_type
        return self

    @classmethod
    def create(
        cls, engine: Engine, pre_type: Any, post_type: Any, tag: Any = None
    ) -> ConnectivitySet:
        pre_type, post_type, tag = cls._types(pre_type, post_type, tag)
        with _translating():
            cs = super().create(engine, _name(pre_type), _name(post_type), tag)
        return cs._set_types(pre_type, post_type)

    @classmethod
    def require(
        cls, engine: Engine, pre_type: Any, post_type: Any, tag: Any = None
    ) -> ConnectivitySet:
        pre_type, post_type, tag = cls._types(pre_type, post_type, tag)
        with _translating():
            cs = super().require(engine, _name(pre_type), _name(post_type), tag)
        return cs._set_types(pre_type, post_type)

    def connect(self, pre_set: Any, post_set: Any, src_locs: Any, dest_locs: Any) -> None:
        """Connect cells by their index in each placement set's view (chunk, label
        and morphology label filters applied)."""
        with _translating():
            src = _core_validate.as_locations(src_locs, "src_locs")
            dst = _core_validate.as_locations(dest_locs, "dest_locs")
            if len(src) and len(src) == len(dst):
                src = _backmapped(pre_set, src)
                dst = _backmapped(post_set, dst)
            super().connect(pre_set, post_set, src, dst)

    def get_local_chunks(self, direction: str) -> list[Any]:
        with _translating():
            return _bsb_chunks_of(super().get_local_chunks(direction))

    def get_global_chunks(self, direction: str, local_: Any) -> list[Any]:
        with _translating():
            return _bsb_chunks_of(super().get_global_chunks(direction, local_))

    def flat_iter_connections(
        self, direction: str | None = None, local_: Any = None, global_: Any = None
    ) -> Iterator[Any]:
        with _translating():
            inner = super().flat_iter_connections(direction, local_, global_)
        return (
            (d, _bsb_chunk(lchunk), _bsb_chunk(gchunk), data)
            for d, lchunk, gchunk, data in inner
        )

    def nested_iter_connections(
        self, direction: str | None = None, local_: Any = None, global_: Any = None
    ) -> Any:
        with _translating():
            return _ChunkView(super().nested_iter_connections(direction, local_, global_))

    remove = _translated(_core_cs.ConnectivitySet.remove)
    clear = _translated(_core_cs.ConnectivitySet.clear)
    chunk_connect = _translated(_core_cs.ConnectivitySet.chunk_connect)
    load_block_connections = _translated(_core_cs.ConnectivitySet.load_block_connections)
    load_local_connections = _translated(_core_cs.ConnectivitySet.load_local_connections)
    get_chunk_stats = _translated(_core_cs.ConnectivitySet.get_chunk_stats)
    __len__ = _translated(_core_cs.ConnectivitySet.__len__)
