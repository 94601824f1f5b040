"""Name ↔ class registries for format classes and datatypes.

Self-describing files name the class that wrote them (``written_by``) and optionally the
datatype they hold (``type``). Readers resolve those names **only** through these
registries: a string read from a file is never handed to :mod:`importlib`, so a crafted
file cannot make us import anything.

Every :class:`~bsb_store.h5.H5File` and :class:`~bsb_store.h5.HasTraits` subclass
registers itself when it is defined, under ``"<module>.<qualname>"`` or the ``name=``
class keyword. Extra names (for example the fully qualified names TVB writes) are added
with the ``aliases=`` class keyword or :func:`register`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Generic, TypeVar

from ..exceptions import InvalidInputError, UnknownFormatError

T = TypeVar("T", bound=type)


def default_name(cls: type) -> str:
    """The stable name a class registers under unless told otherwise."""
    return f"{cls.__module__}.{cls.__qualname__}"


class Registry(Generic[T]):
    """A mapping of names to classes, with one canonical name per class.

    Re-registering a name for a class with the same module and qualified name replaces
    the old class silently (that is a module reload or a class redefined in a loop);
    claiming a name held by an unrelated class raises.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._register_function = "register" if kind == "format" else f"register_{kind}"
        self._by_name: dict[str, T] = {}

    def register(self, name: str, cls: T, *, replace: bool = False) -> None:
        """Map ``name`` to ``cls``.

        :param replace: allow taking a name that another, unrelated class holds.
        :raises InvalidInputError: if the name is taken and ``replace`` is false.
        """
        if not isinstance(name, str) or not name:
            raise InvalidInputError(
                f"A {self.kind} name must be a non-empty string, got {name!r}.",
                value=name,
            )
        held = self._by_name.get(name)
        if (
            held is not None
            and held is not cls
            and not replace
            and default_name(held) != default_name(cls)
        ):
            raise InvalidInputError(
                f"The {self.kind} name {name!r} is already registered for "
                f"{default_name(held)}; cannot register {default_name(cls)} under it "
                "(pass replace=True to override).",
                value=name,
            )
        self._by_name[name] = cls

    def unregister(self, name: str) -> None:
        """Remove ``name``; unknown names are ignored."""
        self._by_name.pop(name, None)

    def get(self, name: str) -> T:
        """The class registered under ``name``.

        :raises UnknownFormatError: if no class is registered under that name.
        """
        try:
            return self._by_name[name]
        except KeyError:
            raise UnknownFormatError(
                f"No {self.kind} class is registered under the name {name!r}: register "
                f"one with bsb_store.h5.registry.{self._register_function}({name!r}, "
                "cls) or define it (classes register when they are defined).",
                value=name,
            ) from None

    def names_of(self, cls: type) -> list[str]:
        """Every name under which ``cls`` is registered."""
        return [n for n, c in self._by_name.items() if c is cls]

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._by_name))

    def __len__(self) -> int:
        return len(self._by_name)


#: Format classes (``H5File`` subclasses), looked up by ``written_by``.
formats: Registry[type] = Registry("format")
#: Datatypes (``HasTraits`` subclasses), looked up by the ``type`` header.
datatypes: Registry[type] = Registry("datatype")


def register(name: str, cls: type, *, replace: bool = False) -> None:
    """Register a format class under an extra ``written_by`` name (an alias)."""
    formats.register(name, cls, replace=replace)


def register_datatype(name: str, cls: type, *, replace: bool = False) -> None:
    """Register a datatype class under an extra ``type`` name (an alias)."""
    datatypes.register(name, cls, replace=replace)


def lookup(name: str) -> type:
    """The format class registered under ``name``; :class:`UnknownFormatError` if none."""
    return formats.get(name)


def lookup_datatype(name: str) -> type:
    """The datatype class registered under ``name``; :class:`UnknownFormatError` if
    none."""
    return datatypes.get(name)
