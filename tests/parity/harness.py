"""The differential harness: one BSB network on two engines, every call made on both.

A :class:`Twin` holds two :class:`bsb.Scaffold` objects built from the same
configuration, one on bsb-hdf5 (``engine: hdf5``, the reference) and one on bsb-store
(``engine: store``). :meth:`Twin.both` runs the same function on each side and compares
the outcomes: a returned value is compared exactly (after :func:`normalize`: arrays by
dtype kind, shape and values, order included; bsb chunks by id), an exception by its bsb
type (:func:`error_kind`). Where bsb-hdf5 is known to be wrong, a :class:`Divergence`
(listed in ``docs/plugin.rst``) names the pattern and the harness asserts our correct
behaviour instead; everything else must be identical.
"""

from __future__ import annotations

import builtins
import itertools
import os
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from bsb import Chunk, Configuration, MorphologySet, RotationSet, Scaffold, Storage
from bsb.storage.interfaces import StoredMorphology

ENGINES = ("hdf5", "store")
#: The placement-set reads the state machine makes on a view (names as in its log).
PLACEMENT_READS = (
    "len",
    "load_ids",
    "load_positions",
    "load_rotations",
    "load_morphologies",
    "load_morphologies_empty",
    "load_additional",
    "load_additional_w",
    "get_unique_labels",
    "get_labelled",
    "get_label_mask",
)
#: The reference engine's side comes first in every pair.
REFERENCE, OURS = ENGINES


def network_config(chunk_size: float = 100.0) -> Configuration:
    """Two cell types with positions (``a``, ``b``) and one entity type (``e``)."""
    return Configuration.default(
        network={"x": 400.0, "y": 400.0, "z": 400.0, "chunk_size": chunk_size},
        cell_types={
            "a": {"spatial": {"radius": 1, "count": 1}},
            "b": {"spatial": {"radius": 1, "count": 1}},
            "e": {"entity": True, "spatial": {"count": 1}},
        },
    )


def make_network(engine: str, root: str, config: Configuration | None = None) -> Scaffold:
    """A fresh network on ``engine`` at ``root`` (removed first if it exists)."""
    if os.path.exists(root):
        os.remove(root)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # bsb-hdf5's own warnings on a new file
        return Scaffold(config or network_config(), Storage(engine, root))


# ----------------------------------------------------------------- comparison
def error_class(raised: type) -> type:
    """What an exception type is, for comparing engines: the first class of its MRO
    from bsb (``bsb.exceptions...``), else its first built-in class."""
    mro = raised.__mro__
    for cls in mro:
        if cls.__module__.split(".")[0] == "bsb" and issubclass(cls, Exception):
            return cls
    for cls in mro:
        if cls.__module__ == "builtins" and getattr(builtins, cls.__name__, None) is cls:
            return cls
    return raised


def error_kind(exc: BaseException) -> str:
    cls = error_class(type(exc))
    return f"bsb.{cls.__name__}" if cls.__module__.startswith("bsb") else cls.__name__


def normalize(value: Any) -> Any:
    """A plain, exactly comparable form of what an engine returned."""
    if isinstance(value, Chunk):
        return ("chunk", int(value.id))
    if isinstance(value, RotationSet):
        return ("rotations", normalize(np.asarray(value)))
    if isinstance(value, MorphologySet):
        names = [m.name for m in value._loaders]
        idx = np.asarray(value.get_indices())
        return ("morphologies", [names[i] for i in idx.tolist()])
    if isinstance(value, StoredMorphology):
        return ("stored", value.name)
    if isinstance(value, np.ndarray):
        if value.dtype == object:
            return ("objects", [normalize(v) for v in value.tolist()])
        kind = "i" if value.dtype.kind == "u" else value.dtype.kind
        return ("array", kind, value.shape, value.tolist())
    if isinstance(value, np.generic):
        return normalize(value.item())
    if isinstance(value, (set, frozenset)):
        # The type too: bsb's label sets are a hashable set subclass.
        return (type(value).__name__, sorted(map(str, value)))
    if isinstance(value, dict):
        return ("dict", sorted((str(k), normalize(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return [normalize(v) for v in value]
    if isinstance(value, float) and np.isnan(value):
        return "nan"
    return value


@dataclass(frozen=True)
class Outcome:
    """What one call did on one engine: a normalized value, or an error kind."""

    value: Any = None
    error: str | None = None
    detail: str = field(default="", compare=False)  # the message: engines word it apart
    raised: type | None = field(default=None, compare=False)

    def catches(self, other: Outcome) -> bool:
        """Whether code that catches this outcome's error catches ``other``'s too
        (ours may raise a subclass of the reference's bsb or built-in type)."""
        return (
            self.raised is not None
            and other.raised is not None
            and issubclass(other.raised, error_class(self.raised))
        )

    @classmethod
    def of(cls, fn: Callable[[], Any]) -> Outcome:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return cls(value=normalize(fn()))
        except Exception as e:  # every engine error is compared, not raised
            return cls(
                error=error_kind(e),
                detail=f"{type(e).__name__}: {e}"[:300],
                raised=type(e),
            )

    def __str__(self) -> str:
        return (
            f"raised {self.detail}" if self.error else f"returned {self.value!r}"[:2000]
        )


@dataclass(frozen=True)
class Divergence:
    """A documented difference where bsb-hdf5 is wrong: ``matches`` recognises the
    reference's wrong outcome for this call, and ours must equal ``expected``."""

    name: str
    matches: Callable[[str, Outcome], bool]
    expected: Callable[[str, Outcome, Outcome], bool]  # (call, hdf5's, ours)


class ParityError(AssertionError):
    pass


@dataclass
class Side:
    """One engine's network and the objects a sequence of operations keeps using
    (placement set views keep their filters between calls)."""

    engine: str
    network: Scaffold
    views: dict[str, Any]

    def ps(self, name: str) -> Any:
        if name not in self.views:
            self.views[name] = self.network.get_placement_set(name)
        return self.views[name]

    def cs(self, tag: str) -> Any:
        return self.network.get_connectivity_set(tag)


class Twin:
    """The same network on both engines; every call goes to both and is compared."""

    def __init__(self, directory: str, config: Configuration | None = None):
        self.sides = [
            Side(e, make_network(e, os.path.join(directory, f"{e}.h5"), config), {})
            for e in ENGINES
        ]
        self.divergences: list[Divergence] = []
        self.log: list[str] = []

    def both(
        self, what: str, fn: Callable[[Side], Any], *, known: Iterable[Divergence] = ()
    ) -> Outcome:
        """Run ``fn`` on each side; raise :class:`ParityError` on any difference that
        is not one of the ``known`` divergences. Returns our outcome."""
        ref, ours = (Outcome.of(lambda s=s: fn(s)) for s in self.sides)
        self.log.append(what)
        if ref == ours or ref.catches(ours):
            return ours
        for d in known:
            if d.matches(what, ref) and d.expected(what, ref, ours):
                self.divergences.append(d)
                return ours
        steps = "\n  ".join(self.log[-60:])
        raise ParityError(
            f"{what}:\n  hdf5  {ref}\n  store {ours}\nlast steps:\n  {steps}"
        )

    def close(self) -> None:
        for side in self.sides:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                side.network.storage.remove()


# ------------------------------------------------------------------ inputs
def chunk_as(coords: tuple[int, int, int], form: str, size: float = 100.0) -> Any:
    """A chunk in one of the forms BSB users pass: a tuple, a list, an int array, or
    a bsb ``Chunk`` (with or without a size)."""
    if form == "tuple":
        return tuple(coords)
    if form == "list":
        return list(coords)
    if form == "array":
        return np.array(coords)
    if form == "sized":
        return Chunk(coords, (size,) * 3)
    return Chunk(coords, None)


def pin_combinations(chunks: list[Any]) -> list[tuple[Any, Any, Any]]:
    """Every (direction, local_, global_) pin of the connectivity iterators: unpinned,
    one chunk, or a list of chunks on each axis."""
    dirs = [None, "inc", "out"]
    picks: list[Any] = [None]
    if chunks:
        picks += [chunks[0], chunks[:2]]
    return list(itertools.product(dirs, picks, picks))
