"""MorphologyRepository: named neuron morphologies as plain arrays, one group each.

A morphology (:class:`MorphologyData`) is what a BSB ``Morphology`` holds once it is
optimised onto shared buffers: per-point ``points`` (n, 3), ``radii`` (n,), label-set
ids ``labels`` (n,) with their table ``labelsets`` (id 0 is the empty set) and named
``properties``; a branch tree as ``branch_ends`` (exclusive end row of each branch, so
branches own consecutive rows) and ``parents`` (-1 for roots, a parent always precedes
its children); and a JSON-able ``meta`` dict in which numpy arrays round-trip.

On disk, one group per morphology with as few objects as the data allows (the cost of
writing and reading a morphology is per HDF5 object far more than per byte)::

    morphologies/<name>/          @meta JSON (numpy-aware, see encode_meta)
                                  @labelsets JSON {"<id>": [sorted labels], ...}
      points     compound (n,)    one row per point: position float64 (3,),
                                  radius float64, label int64 (label-set id)
      branches   int64 (B, 2)     [end row (exclusive), parent branch or -1]
      properties/<prop>           only if it has properties: (n, ...) in the
                                  property's own dtype, creation order

Stores written before this layout hold ``points`` (n, 3), ``radii`` and ``labels``
(with the ``labelsets`` attribute) as three datasets and always a ``properties``
group; they are read as such.

A save is one commit to the process's shard (:meth:`MorphologyRepository._commit`); the
merge that follows (before the next read or transaction) stages the group and moves it
into place, replacing what was there. Costs: a save writes that morphology and nothing
else (the metadata is an attribute of the group, not a global JSON blob). Reads go
through the engine's cached handle; :meth:`MorphologyRepository.load_many` and
:meth:`MorphologyRepository.all` read everything they need inside one read block.
"""

from __future__ import annotations

import json
from collections.abc import Container, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import h5py
import numpy as np

from ...exceptions import (
    DtypeError,
    InvalidInputError,
    MorphologyExistsError,
    MorphologyNotFoundError,
    RecoveryNeededError,
    ShapeError,
)
from .. import layout
from ..writes import consolidate as merge
from ..writes.shard import Call, Record
from ..writes.txn import Transaction
from . import meta as jsonmeta
from .base import Resource
from .validate import as_float_rows, parse_name

if TYPE_CHECKING:
    from ..engine import HDF5Engine

GROUP = "morphologies"
#: The rows of a morphology's ``points`` dataset.
POINT_ROW = np.dtype([("position", "<f8", (3,)), ("radius", "<f8"), ("label", "<i8")])
#: Shard stream prefix of saves: ``("M", "", column[, property name])``.
_STREAM = ("M", "")
#: An applied count no shard reaches (hides this process's own shard from a check).
_NEVER = 2**62


@dataclass
class _Unmerged:
    """The saves this process committed to its shard (the writer named ``writer``)
    that the root may not hold yet: ``names[name]`` is the shard's committed log row
    count once the last save of ``name`` was committed, ``last`` the largest of them.
    A save is merged once the root's applied count for the writer reaches its count."""

    writer: str
    names: dict[str, int] = field(default_factory=dict)
    last: int = 0
    applied: int = 0  # the root's applied count for the writer, as last looked up

    def __contains__(self, name: object) -> bool:
        count = self.names.get(name)  # type: ignore[call-overload]
        return count is not None and count > self.applied


#: root path -> this process's unmerged saves to it.
_UNMERGED: dict[str, _Unmerged] = {}
_ND = "__ndarray__"
_META_DTYPES = "biufU"  # numpy kinds that meta arrays may hold (JSON-exact)
_PROP_DTYPES = "biufc"  # numpy kinds that per-point properties may hold


# ----------------------------------------------------------------------------- meta
def encode_meta(meta: Mapping[str, Any]) -> str:
    """JSON text of a meta dict; numpy arrays and scalars round-trip (see
    :mod:`bsb_store.core.resources.meta`)."""
    if not isinstance(meta, Mapping):
        raise InvalidInputError(
            f"Morphology meta must be a dict, got {type(meta).__name__}.", value=meta
        )
    return jsonmeta.encode(meta, "morphology meta", numpy_scalars=True)


def decode_meta(text: str | bytes) -> dict[str, Any]:
    """The meta dict that :func:`encode_meta` wrote."""
    return jsonmeta.decode(text, "morphology meta")


meta_equal = jsonmeta.meta_equal


def _array_equal(a: np.ndarray, b: np.ndarray) -> bool:
    nan = a.dtype.kind in "fc" and b.dtype.kind in "fc"
    return a.shape == b.shape and bool(np.array_equal(a, b, equal_nan=nan))


# ------------------------------------------------------------------ MorphologyData
def _name(obj: Any, what: str) -> str:
    """``parse_name``, plus: the name must be valid UTF-8 (HDF5 link names are)."""
    name = parse_name(obj, what)
    try:
        name.encode("utf-8")
    except UnicodeEncodeError as e:
        raise InvalidInputError(
            f"Invalid {what} name {name!r}: not encodable as UTF-8 ({e.reason}).",
            name=name,
        ) from None
    return name


def _ints(value: Any, what: str) -> np.ndarray:
    arr = np.asarray(value)
    if arr.size == 0:
        return np.empty(0, dtype=np.int64)
    if arr.dtype.kind not in "iu":
        raise DtypeError(f"{what} must be integers, got dtype {arr.dtype}.", what=what)
    if arr.ndim != 1:
        raise ShapeError(f"{what} must be 1-D, got shape {arr.shape}.", what=what)
    if arr.dtype.kind == "u" and arr.max() > np.iinfo(np.int64).max:
        raise InvalidInputError(f"{what} exceed the int64 range.", what=what)
    return np.array(arr, dtype=np.int64)


def _floats(value: Any, n: int, what: str) -> np.ndarray:
    arr = np.asarray(value)
    if arr.size == 0 and n == 0:
        return np.empty(0, dtype=np.float64)
    if arr.dtype.kind not in "biuf":
        raise DtypeError(f"{what} must be real numbers, got {arr.dtype}.", what=what)
    if arr.shape != (n,):
        raise ShapeError(
            f"{what} must have shape ({n},) (one per point), got {arr.shape}.", what=what
        )
    return np.array(arr, dtype=np.float64)


def _labelsets(value: Mapping[Any, Iterable[str]] | None) -> dict[int, frozenset[str]]:
    """``{id: frozenset(labels)}`` with id 0 the empty set, first."""
    out: dict[int, frozenset[str]] = {0: frozenset()}
    for k, labels in (value or {}).items():
        if isinstance(labels, (str, bytes)) or not isinstance(labels, Iterable):
            raise InvalidInputError(
                f"Label set {k!r} must be a collection of str, got {labels!r}.", id=k
            )
        labels = frozenset(labels)
        if not all(isinstance(s, str) for s in labels):
            raise InvalidInputError(
                f"Label set {k!r} must hold only str labels, got {set(labels)!r}.", id=k
            )
        if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 0:
            raise InvalidInputError(f"Label set ids must be ints >= 0, got {k!r}.", id=k)
        out[int(k)] = frozenset(map(str, labels))
    if out[0]:
        raise InvalidInputError(
            f"Label set id 0 is the empty set, got {sorted(out[0])}.", id=0
        )
    return out


def _properties(value: Mapping[str, Any] | None, n: int) -> dict[str, np.ndarray]:
    out = {}
    for name, rows in (value or {}).items():
        name = _name(name, "morphology property")
        arr = np.array(rows)
        if arr.dtype.kind not in _PROP_DTYPES:
            raise DtypeError(
                f"Property '{name}' must be numeric or bool, got {arr.dtype}.", name=name
            )
        if arr.ndim == 0 or arr.shape[0] != n:
            raise ShapeError(
                f"Property '{name}' must have {n} rows (one per point), got shape "
                f"{arr.shape}.",
                name=name,
            )
        out[name] = arr
    return out


def _check_tree(ends: np.ndarray, parents: np.ndarray, n: int) -> None:
    b = len(ends)
    if len(parents) != b:
        raise ShapeError(
            f"{b} branch ends but {len(parents)} parents: one of each per branch."
        )
    if b == 0 and n:
        raise InvalidInputError(f"{n} points but no branch holds them.", points=n)
    if b and (ends[0] < 0 or np.any(np.diff(ends) < 0) or ends[-1] != n):
        raise InvalidInputError(
            f"Branch ends must be non-decreasing from >= 0 and end at the point count "
            f"{n}, got {ends.tolist()}.",
            ends=ends.tolist(),
        )
    bad = np.flatnonzero((parents < -1) | (parents >= np.arange(b)))
    if len(bad):
        i = int(bad[0])
        raise InvalidInputError(
            f"Branch {i} has parent {int(parents[i])}: a parent must be -1 (a root) or "
            f"a branch listed before its child (0..{i - 1}).",
            branch=i,
        )


def _labels(value: Any, sets: dict[int, frozenset[str]], n: int) -> np.ndarray:
    labels = np.zeros(n, np.int64) if value is None else _ints(value, "labels")
    if len(labels) != n:
        raise ShapeError(
            f"labels must have {n} entries (one per point), got {len(labels)}."
        )
    unknown = np.setdiff1d(labels, list(sets))
    if len(unknown):
        raise InvalidInputError(
            f"labels use label-set ids {unknown.tolist()} missing from labelsets "
            f"{sorted(sets)}.",
            ids=unknown.tolist(),
        )
    return labels


def _tree(ends: Any, parents: Any, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Validated (branch_ends, parents); by default one root branch holding every
    point (no branch when there are no points)."""
    if (ends is None) != (parents is None):
        raise InvalidInputError("Give both branch_ends and parents, or neither.")
    if ends is None:
        ends = np.array([n] if n else [], dtype=np.int64)
        parents = np.full(len(ends), -1, dtype=np.int64)
    else:
        ends, parents = _ints(ends, "branch_ends"), _ints(parents, "parents")
    _check_tree(ends, parents, n)
    return ends, parents


@dataclass(frozen=True, eq=False)
class MorphologyData:
    """One morphology as arrays; validated and copied on construction.

    Fields cannot be rebound; the arrays belong to the instance (they are copies of
    what was given, or fresh arrays read from the store) and may be modified in place,
    which :meth:`MorphologyRepository.save` checks again.

    :param points: (n, 3) finite coordinates; a 1-D triple is one point.
    :param radii: (n,) radius per point.
    :param labels: (n,) label-set id per point (default: all 0, unlabelled).
    :param labelsets: ``{id: set of labels}``; id 0 is (and defaults to) the empty set.
    :param properties: ``{name: (n, ...) numeric array}`` of extra per-point data.
    :param branch_ends: (B,) exclusive end row of each branch; branch ``i`` owns rows
        ``branch_ends[i-1]:branch_ends[i]`` (may be empty). Default: one root branch
        holding every point (none when there are no points).
    :param parents: (B,) parent branch of each branch, -1 for roots; parents precede
        their children.
    :param meta: JSON-able dict (numpy arrays and scalars allowed).
    """

    points: np.ndarray
    radii: np.ndarray
    labels: np.ndarray | None = None
    labelsets: Mapping[int, Iterable[str]] | None = None
    properties: Mapping[str, Any] | None = None
    branch_ends: np.ndarray | None = None
    parents: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    __hash__ = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        points = np.array(as_float_rows(self.points, 3, "points", finite=True))
        n = len(points)
        sets = _labelsets(self.labelsets)
        meta = {} if self.meta is None else self.meta
        if not isinstance(meta, Mapping):
            raise InvalidInputError(
                f"meta must be a dict, got {type(meta).__name__}.", value=meta
            )
        encode_meta(meta)
        self._set(
            points,
            _floats(self.radii, n, "radii"),
            _labels(self.labels, sets, n),
            sets,
            _properties(self.properties, n),
            *_tree(self.branch_ends, self.parents, n),
            dict(meta),
        )

    def _set(self, *values: Any) -> None:
        names = (
            "points",
            "radii",
            "labels",
            "labelsets",
            "properties",
            "branch_ends",
            "parents",
            "meta",
        )
        for name, value in zip(names, values):
            object.__setattr__(self, name, value)

    @classmethod
    def _trusted(cls, *values: Any) -> MorphologyData:
        """Build from arrays known to be valid (read from the store), without copies."""
        obj = object.__new__(cls)
        obj._set(*values)
        return obj

    @classmethod
    def from_branches(
        cls,
        branches: Sequence[Mapping[str, Any]],
        parents: Sequence[int],
        *,
        labelsets: Mapping[int, Iterable[str]] | None = None,
        meta: Mapping[str, Any] | None = None,
    ) -> MorphologyData:
        """Concatenate per-branch data: each branch is a mapping with ``points``
        (k, 3), ``radii`` (k,), and optionally ``labels`` (k,) and ``properties``
        ``{name: (k, ...)}`` (every branch must carry the same property names)."""
        parts: dict[str, list[np.ndarray]] = {"points": [], "radii": [], "labels": []}
        props: dict[str, list[np.ndarray]] = {}
        names = set(branches[0].get("properties") or {}) if branches else set()
        for i, b in enumerate(branches):
            p = as_float_rows(b["points"], 3, f"branch {i} points")
            k = len(p)
            parts["points"].append(p)
            parts["radii"].append(_floats(b["radii"], k, f"branch {i} radii"))
            labels = b.get("labels")
            labels = np.zeros(k, np.int64) if labels is None else _ints(labels, "labels")
            if len(labels) != k:
                raise ShapeError(
                    f"branch {i} has {k} points but {len(labels)} labels.", branch=i
                )
            parts["labels"].append(labels)
            bp = b.get("properties") or {}
            if set(bp) != names:
                raise InvalidInputError(
                    f"Branch {i} has properties {sorted(bp)}, branch 0 has "
                    f"{sorted(names)}: every branch must carry the same ones.",
                    branch=i,
                )
            for key, value in _properties(bp, k).items():
                props.setdefault(key, []).append(value)
        counts = [len(p) for p in parts["points"]]
        return cls(
            points=np.concatenate(parts["points"]) if branches else np.empty((0, 3)),
            radii=np.concatenate(parts["radii"]) if branches else np.empty(0),
            labels=np.concatenate(parts["labels"]) if branches else None,
            labelsets=labelsets,
            properties={k: np.concatenate(v) for k, v in props.items()},
            branch_ends=np.cumsum(np.asarray(counts, dtype=np.int64)),
            parents=parents,
            meta=dict(meta or {}),
        )

    # --------------------------------------------------------------------- views
    def __len__(self) -> int:
        return len(self.points)

    @property
    def n_branches(self) -> int:
        return len(self.branch_ends)

    @property
    def branch_starts(self) -> np.ndarray:
        """(B,) first row of each branch."""
        return self.branch_ends - self.branch_counts

    @property
    def branch_counts(self) -> np.ndarray:
        """(B,) number of points of each branch."""
        return np.diff(np.concatenate([[0], self.branch_ends])).astype(np.int64)

    def branch_slice(self, i: int) -> slice:
        """The rows of branch ``i``."""
        return slice(int(self.branch_starts[i]), int(self.branch_ends[i]))

    def copy_with(self, **changes: Any) -> MorphologyData:
        """A validated copy with some fields replaced."""
        values = {k: getattr(self, k) for k in self.__dataclass_fields__}
        return MorphologyData(**{**values, **changes})

    def equals(self, other: object, *, meta: bool = True) -> bool:
        """Exact equality of every array (dtypes of properties included; NaN equals
        NaN), of the label sets, and of ``meta`` unless ``meta=False``."""
        if not isinstance(other, MorphologyData):
            return False
        arrays = ("points", "radii", "labels", "branch_ends", "parents")
        return (
            all(_array_equal(getattr(self, a), getattr(other, a)) for a in arrays)
            and dict(self.labelsets) == dict(other.labelsets)
            and self.properties.keys() == other.properties.keys()
            and all(
                v.dtype == other.properties[k].dtype
                and _array_equal(v, other.properties[k])
                for k, v in self.properties.items()
            )
            and (not meta or meta_equal(self.meta, other.meta))
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, MorphologyData):
            return NotImplemented
        return self.equals(other)

    def __repr__(self) -> str:
        return (
            f"<MorphologyData {len(self)} points, {self.n_branches} branches, "
            f"properties {sorted(self.properties)}>"
        )

    def revalidated(self) -> MorphologyData:
        """Check again (arrays may have been modified in place since construction)."""
        return self.copy_with()


# ----------------------------------------------------------------------- handles
class MorphologyHandle:
    """A lazily loaded stored morphology: ``name``, ``get_meta()``, ``load()``.

    Equal (and hashed) by name, like BSB's ``StoredMorphology``."""

    def __init__(
        self, repository: MorphologyRepository, name: str, meta: str | Mapping[str, Any]
    ):
        self.name = name
        self._repository = repository
        self._meta_json = meta if isinstance(meta, str) else encode_meta(meta)

    def get_meta(self) -> dict[str, Any]:
        """A fresh copy of the metadata known when the handle was made."""
        return decode_meta(self._meta_json)

    @property
    def meta(self) -> dict[str, Any]:
        return self.get_meta()

    def load(self) -> MorphologyData:
        """Read the morphology from the store now."""
        return self._repository.load(self.name)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, MorphologyHandle) and other.name == self.name

    def __hash__(self) -> int:
        return hash(self.name)

    def __repr__(self) -> str:
        return f"<MorphologyHandle {self.name!r}>"


class Selector(Protocol):
    """What :meth:`MorphologyRepository.select` needs of a selector."""

    def validate(self, all_handles: list[MorphologyHandle]) -> None: ...

    def pick(self, handle: MorphologyHandle) -> bool: ...


# -------------------------------------------------------------------- repository
class MorphologyRepository(Resource):
    """The morphologies of a store, by name (numpy in, numpy out)."""

    def __init__(self, engine: HDF5Engine):
        super().__init__(engine, GROUP)

    def _missing(self, name: str) -> MorphologyNotFoundError:
        return MorphologyNotFoundError(
            f"No morphology '{name}' in '{self._engine.root}'.",
            name=name,
            path=self._engine.root,
        )

    # -------------------------------------------------------------------- reads
    def list(self) -> list[str]:
        """The stored names, sorted."""
        with self._engine._read() as f:
            return sorted(f[GROUP])

    def has(self, name: str) -> bool:
        """Whether a morphology ``name`` is stored."""
        name = _name(name, "morphology")
        with self._engine._read() as f:
            return f"{GROUP}/{name}" in f

    def __contains__(self, name: object) -> bool:
        return self.has(name)  # type: ignore[arg-type]

    def _group(self, f: h5py.File, name: str) -> h5py.Group:
        g = f.get(f"{GROUP}/{_name(name, 'morphology')}")
        if g is None:
            raise self._missing(name)
        return g

    def load(self, name: str) -> MorphologyData:
        """The stored morphology ``name`` with its meta.

        :raises MorphologyNotFoundError: if it is not stored."""
        with self._engine._read() as f:
            return _read_data(self._group(f, name))

    def load_many(self, names: Iterable[str]) -> list[MorphologyData]:
        """Several morphologies, in the order given, inside one read."""
        with self._engine._read() as f:
            return [_read_data(self._group(f, n)) for n in names]

    def get_meta(self, name: str) -> dict[str, Any]:
        """The meta dict of ``name``. :raises MorphologyNotFoundError:"""
        with self._engine._read() as f:
            return decode_meta(self._group(f, name).attrs["meta"])

    def get_all_meta(self) -> dict[str, dict[str, Any]]:
        """``{name: meta}`` of every stored morphology (sorted by name)."""
        with self._engine._read() as f:
            return {n: decode_meta(g.attrs["meta"]) for n, g in sorted(f[GROUP].items())}

    def preload(
        self, name: str, meta: Mapping[str, Any] | None = None
    ) -> MorphologyHandle:
        """A lazy handle; with ``meta`` given, no read happens (and no check)."""
        name = _name(name, "morphology")
        if meta is not None:
            return MorphologyHandle(self, name, meta)
        with self._engine._read() as f:
            return MorphologyHandle(self, name, _raw_meta(self._group(f, name)))

    def all(self) -> list[MorphologyHandle]:
        """A lazy handle for every stored morphology (sorted by name), in one read;
        each handle's meta is decoded only when asked for."""
        with self._engine._read() as f:
            return [
                MorphologyHandle(self, n, _raw_meta(g))
                for n, g in sorted(f[GROUP].items())
            ]

    def select(self, *selectors: Selector) -> list[MorphologyHandle]:
        """For each selector: ``validate(all handles)``, then the handles it picks;
        results are concatenated in selector order. No selectors: ``[]``."""
        if not selectors:
            return []
        handles = self.all()
        picked: list[MorphologyHandle] = []
        for selector in selectors:
            selector.validate(handles)
            picked.extend(h for h in handles if selector.pick(h))
        return picked

    # ------------------------------------------------------------------- writes
    def save(
        self, name: str, morphology: MorphologyData, overwrite: bool = False
    ) -> MorphologyData:
        """Store ``morphology`` under ``name``; its stored meta gains ``name``,
        ``ldc`` (min corner of the points) and ``mdc`` (max corner; NaN when empty).

        :returns: the morphology as stored (the caller's object is not modified).
        :raises MorphologyExistsError: ``name`` is taken and ``overwrite`` is False.
        :raises InvalidInputError: invalid name, arrays or meta (nothing is written).
        """
        return self.save_many({name: morphology}, overwrite=overwrite)[0]

    def save_many(
        self, morphologies: Mapping[str, MorphologyData], overwrite: bool = False
    ) -> list[MorphologyData]:
        """Save several morphologies in one call (all or none)."""
        prepared = [_prepare(_name(n, "morphology"), m) for n, m in morphologies.items()]
        self._commit(prepared, overwrite)
        return [data for _, data, _ in prepared]

    def _save_owned(
        self, name: str, morphology: MorphologyData, overwrite: bool = False
    ) -> MorphologyData:
        """:meth:`save` of a morphology the caller built a moment ago and gives away
        (the BSB adapter's conversion): it is not validated and copied a second time,
        and it becomes the returned object, stored meta included."""
        prepared = [_prepare(_name(name, "morphology"), morphology, owned=True)]
        self._commit(prepared, overwrite)
        return prepared[0][1]

    def _commit(
        self, prepared: list[tuple[str, MorphologyData, str]], overwrite: bool
    ) -> None:
        """Commit validated saves as ONE call to this process's shard.

        A save is not a root write session (open the root through the undo log,
        validate, close: ~2 ms), but a shard commit (one flush, ~0.3 ms) merged into the
        root by the next read or transaction, like an append; readers merge pending
        shard data first, so a save is visible to every read that starts after it
        returned, and a killed save is either committed whole or not at all.

        Unlike appends, saves are serialised with each other and with root
        transactions: the call holds the root's exclusive lock (without opening the
        root for writing) while it merges what other processes committed and decides
        whether a name is taken, so ``overwrite=False`` raises exactly when a
        transaction would have, and of two saves of one name the later one wins."""
        engine = self._engine
        engine._check_writable()
        if not prepared:
            return
        st = engine._st
        with st.rlock, st.lock.exclusive():
            f = self._settled()
            unmerged = self._unmerged(f)
            if not overwrite:
                for name, _, _ in prepared:
                    if name in unmerged or f"{GROUP}/{name}" in f:
                        raise MorphologyExistsError(
                            f"A morphology '{name}' already exists in "
                            f"'{engine.root}'; pass overwrite=True to replace it.",
                            name=name,
                        )
            engine._append(_records(prepared, overwrite))
            engine.flush()  # committed now, even inside a write scope
            writer = st.get_writer()
            saves = _UNMERGED.get(engine.root)
            if saves is None or saves.writer != writer.name:
                saves = _UNMERGED[engine.root] = _Unmerged(writer.name)
            saves.last = writer.committed
            saves.names.update((name, writer.committed) for name, _, _ in prepared)

    def _settled(self) -> h5py.File:
        """The root's read handle, under the exclusive lock the caller holds, once
        every other process's committed calls are merged (and an interrupted
        transaction finished): what a save must decide against."""
        engine = self._engine
        st = engine._st
        for merged in (False, True):
            try:
                f = st.read_handle()
            except RecoveryNeededError:
                if merged:
                    raise
                engine._merge_all()
                continue
            applied = dict(st.applied_counts(f))
            if st.writer is not None:  # our own saves are known (see _unmerged)
                applied[st.writer.name] = _NEVER
            if merged or not merge.pending(
                None, layout.shard_dir(engine.root), None, applied
            ):
                return f
            engine._merge_all()
        raise AssertionError("unreachable")  # pragma: no cover

    def _unmerged(self, f: h5py.File) -> Container[str]:
        """Names this process saved to its shard that the root ``f`` does not hold
        yet (a writer closed or replaced since took its saves along: merged, or gone
        with the root it belonged to)."""
        root = self._engine.root
        writer = self._engine._st.writer
        saves = _UNMERGED.get(root)
        if saves is None or writer is None or saves.writer != writer.name:
            _UNMERGED.pop(root, None)
            return ()
        saves.applied = self._engine._st.applied_counts(f).get(writer.name, 0)
        if saves.last <= saves.applied:  # all merged
            saves.names.clear()
        return saves

    def remove(self, name: str) -> None:
        """Delete ``name``. :raises MorphologyNotFoundError: if it is not stored."""
        name = _name(name, "morphology")
        with self._engine._write() as txn:
            if f"{GROUP}/{name}" not in txn.file:
                raise self._missing(name)
            txn.delete(f"{GROUP}/{name}")

    def update_all_meta(self, meta: Mapping[str, Mapping[str, Any]]) -> None:
        """Replace the meta of each morphology named in ``meta`` (others untouched).

        :raises MorphologyNotFoundError: a name is not stored (nothing changes)."""
        self._set_metas(meta, reset_others=False)

    def set_all_meta(self, meta: Mapping[str, Mapping[str, Any]]) -> None:
        """Replace the meta of every morphology: ``meta[name]``, or ``{}`` for stored
        morphologies it does not name.

        :raises MorphologyNotFoundError: a name is not stored (nothing changes)."""
        self._set_metas(meta, reset_others=True)

    def _set_metas(
        self, meta: Mapping[str, Mapping[str, Any]], reset_others: bool
    ) -> None:
        encoded = {_name(n, "morphology"): encode_meta(m) for n, m in meta.items()}
        with self._engine._write() as txn:
            stored = set(txn.file[GROUP])
            missing = sorted(set(encoded) - stored)
            if missing:
                raise self._missing(missing[0])
            if reset_others:
                encoded = {n: encoded.get(n, "{}") for n in sorted(stored)}
            for name, text in encoded.items():
                txn.set_attr(f"{GROUP}/{name}", "meta", text)


# ---------------------------------------------------------------- on-disk format
def _prepare(
    name: str, morphology: MorphologyData, owned: bool = False
) -> tuple[str, MorphologyData, str]:
    """Validate (again, unless ``owned``: built a moment ago by the caller, who gives it
    away) and compute the stored meta, before anything is written."""
    if not isinstance(morphology, MorphologyData):
        raise InvalidInputError(
            f"Morphology '{name}' must be a MorphologyData, got "
            f"{type(morphology).__name__}.",
            name=name,
        )
    data = morphology if owned else morphology.revalidated()
    pts = data.points
    empty = not len(pts)
    meta = {
        **data.meta,
        "name": name,
        "ldc": np.full(3, np.nan) if empty else pts.min(axis=0),
        "mdc": np.full(3, np.nan) if empty else pts.max(axis=0),
    }
    data._set(
        data.points,
        data.radii,
        data.labels,
        data.labelsets,
        data.properties,
        data.branch_ends,
        data.parents,
        meta,
    )
    return name, data, encode_meta(meta)


def _labelsets_json(labelsets: Mapping[int, Iterable[str]]) -> str:
    return json.dumps({str(k): sorted(v) for k, v in labelsets.items()})


def _records(
    prepared: list[tuple[str, MorphologyData, str]], overwrite: bool
) -> list[Record]:
    """The shard records of one save call, two per morphology (``key0``: its position
    in the call): a head ``[name, meta JSON, label sets JSON, layout JSON]``
    (``key1``: overwrite) and its arrays packed into one byte record, because the cost
    of a shard commit is per record, not per byte (see :func:`_pack`)."""
    records = []
    for i, (name, data, meta_json) in enumerate(prepared):
        branches = np.column_stack([data.branch_ends, data.parents]).astype(np.int64)
        fields = [
            ("points", data.points),
            ("radii", data.radii),
            ("labels", data.labels),
            ("branches", branches.reshape(-1, 2)),
            *((f"property:{k}", v) for k, v in data.properties.items()),
        ]
        blob, fields_json = _pack(fields)
        head = [name, meta_json, _labelsets_json(data.labelsets), fields_json]
        records.append(
            Record((*_STREAM, "head"), i, int(overwrite), np.asarray(head, object), 4)
        )
        records.append(Record((*_STREAM, "data"), i, 0, blob, len(blob)))
    return records


def _pack(fields: list[tuple[str, np.ndarray]]) -> tuple[np.ndarray, str]:
    """Arrays as one uint8 buffer (each starting at a multiple of 8 bytes) and the JSON
    ``[[name, dtype, shape], ...]`` that :func:`_unpack` reads it back with."""
    parts, layout = [], []
    for name, arr in fields:
        arr = np.ascontiguousarray(arr)
        raw = np.frombuffer(arr.tobytes(), dtype=np.uint8)
        parts += [raw, np.zeros(-len(raw) % 8, dtype=np.uint8)]
        layout.append([name, arr.dtype.str, list(arr.shape)])
    blob = np.concatenate(parts) if parts else np.empty(0, np.uint8)
    return blob, json.dumps(layout)


def _unpack(blob: np.ndarray, fields_json: str) -> dict[str, np.ndarray]:
    """The arrays :func:`_pack` packed (views of ``blob``)."""
    out, offset = {}, 0
    for name, dtype, shape in json.loads(fields_json):
        dt = np.dtype(dtype)
        count = int(np.prod(shape, dtype=np.int64))
        arr = np.frombuffer(blob, dtype=dt, count=count, offset=offset)
        out[name] = arr.reshape(shape)
        offset += count * dt.itemsize
        offset += -offset % 8
    return out


def _stage(txn: Transaction, name: str, saved: dict[str, Any]) -> None:
    """Stage one morphology's group from its decoded records and swap it in."""
    staged = txn.staging_path()
    g = txn.file.create_group(staged)
    g.attrs["meta"] = saved["meta"]
    g.attrs["labelsets"] = saved["labelsets"]
    rows = np.empty(len(saved["radii"]), dtype=POINT_ROW)
    rows["position"] = saved["points"]
    rows["radius"] = saved["radii"]
    rows["label"] = saved["labels"]
    g.create_dataset("points", data=rows)
    g.create_dataset("branches", data=saved["branches"], dtype="<i8")
    if saved["properties"]:
        props = g.create_group("properties", track_order=True)
        for key, values in saved["properties"].items():
            props.create_dataset(key, data=values)
    txn.replace(staged, f"{GROUP}/{name}")


def _decode(call: Call) -> list[dict[str, Any]]:
    """The saves of one committed call, in call order."""
    saves: dict[int, dict[str, Any]] = {}
    for rec in call.records:
        saved = saves.setdefault(rec.key0, {})
        if rec.stream[2] == "head":
            name, meta, labelsets, fields = (str(x) for x in rec.rows)
            saved.update(name=name, meta=meta, labelsets=labelsets, fields=fields)
            saved["overwrite"] = bool(rec.key1)
        else:
            saved["data"] = rec.rows
    for saved in saves.values():
        arrays = _unpack(saved.pop("data"), saved.pop("fields"))
        saved["properties"] = {
            k.split(":", 1)[1]: v for k, v in arrays.items() if k.startswith("property:")
        }
        saved.update((k, v) for k, v in arrays.items() if ":" not in k)
    return [saves[i] for i in sorted(saves)]


def apply_morphologies(txn: Transaction, _set: str, calls: list[Call]) -> None:
    """Applier: publish committed saves, in commit order (a later save of a name wins;
    only its data is staged). A call that does not overwrite and finds one of its
    names taken is dropped whole with a warning; the lock its save held makes that
    impossible unless the shard was written otherwise."""
    root = txn.file[GROUP]
    final: dict[str, dict[str, Any]] = {}
    for call in calls:
        saves = _decode(call)
        taken = [
            s["name"]
            for s in saves
            if not s["overwrite"] and (s["name"] in final or s["name"] in root)
        ]
        if taken:
            merge.drop_calls(
                f"morphologies {taken} exist (the save did not overwrite)", [call]
            )
            continue
        for saved in saves:
            final.pop(saved["name"], None)
            final[saved["name"]] = saved
    for name, saved in final.items():
        _stage(txn, name, saved)


merge.register_applier(_STREAM[0], apply_morphologies)


def _raw_meta(g: h5py.Group) -> str:
    raw = g.attrs["meta"]
    return raw.decode("utf-8") if isinstance(raw, bytes) else str(raw)


def _read_data(g: h5py.Group) -> MorphologyData:
    branches = g["branches"][()]
    points = g["points"]
    if points.ndim == 2:  # the layout of before: (n, 3) points, radii, labels
        rows = points[()]
        radii, labels = g["radii"][()], g["labels"]
        raw_sets, labels = labels.attrs["labelsets"], labels[()]
    else:
        table = np.empty(points.shape, dtype=POINT_ROW)
        if table.size:  # h5py's [()] and .dtype are slow on compounds: read into rows
            points.read_direct(table)
        rows = np.array(table["position"])
        radii, labels = np.array(table["radius"]), np.array(table["label"])
        raw_sets = g.attrs["labelsets"]
    props = g.get("properties")
    sets = {int(k): frozenset(v) for k, v in json.loads(raw_sets).items()}
    return MorphologyData._trusted(
        rows,
        radii,
        labels,
        sets,
        {} if props is None else {k: ds[()] for k, ds in props.items()},
        np.ascontiguousarray(branches[:, 0]),
        np.ascontiguousarray(branches[:, 1]),
        decode_meta(_raw_meta(g)),
    )


__all__ = [
    "MorphologyData",
    "MorphologyHandle",
    "MorphologyRepository",
    "Selector",
    "decode_meta",
    "encode_meta",
    "meta_equal",
]
