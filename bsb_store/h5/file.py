""":class:`H5File`: a format bound to an HDF5 file or group, with explicit open modes.

A format class subclasses :class:`H5File` and assigns accessors in ``__init__``::

    class VolumeH5(H5File):
        def __init__(self, path, **kwargs):
            super().__init__(path, **kwargs)
            self.origin = DataSet(Volume.origin, self)
            self.voxel_unit = Scalar(Volume.voxel_unit, self)

File lifetime: inside ``with f:`` the file is opened **once** (in the mode given) and
every accessor uses that handle; outside a context each operation opens and closes the
file itself. A read never creates a file; ``mode="r"`` never modifies one. A format can
also be bound to an open :class:`h5py.Group` (``H5File(group)`` or
:meth:`H5File.from_group`): then the caller owns the handle and the format only reads and
writes inside that group.
"""

from __future__ import annotations

import contextvars
import datetime as _dt
import enum
import inspect
import os
import uuid
from collections.abc import Iterator, Sequence
from typing import Any, TypeVar

import h5py

from .._types import Mode
from ..exceptions import (
    DtypeError,
    FormatError,
    InvalidInputError,
    MissingDataError,
    UnknownFormatError,
)
from . import registry
from .accessors import Accessor, Enum, Json, Reference, ReferenceList, Scalar, Uuid
from .datasets import DataSet, SparseMatrix
from .encoding import Profile, decode_as
from .generic import GENERIC_FIELDS, GenericAttributes
from .handles import FileBinding
from .traits import Attr, HasTraits, NArray

F = TypeVar("F", bound="H5File")
# Construction defaults for classes whose __init__ only takes a path (TVB style), set by
# from_file/from_group around the constructor call.
_DEFAULTS: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "bsb_store_h5_defaults", default=None
)


class H5File(FileBinding):
    """A declarative format bound to an HDF5 file (by path) or to an open h5py group.

    :param path: a file path, or an open :class:`h5py.Group` to bind to.
    :param mode: h5py's modes: ``"r"`` (read only, must exist), ``"r+"`` (read/write,
        must exist), ``"a"`` (read/write, created on the first write or ``open()``),
        ``"w"`` (created or truncated now), ``"w-"``/``"x"`` (created now, must not
        exist). Default ``"a"``; for a group, the mode of its file.
    :param profile: ``"native"``, ``"tvb"`` or a :class:`~bsb_store.h5.encoding.Profile`.
        Default: detected from an existing file's headers, else :attr:`default_profile`.
    :param locking: passed to :class:`h5py.File` (HDF5 file locking), if given.
    :param libver: passed to :class:`h5py.File`, if given (h5py's default otherwise).
    """

    def __init_subclass__(
        cls,
        *,
        name: str | None = None,
        aliases: Sequence[str] = (),
        register: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init_subclass__(**kwargs)
        cls.registered_name = name or registry.default_name(cls)
        if register:
            registry.formats.register(cls.registered_name, cls)
            for alias in aliases:
                registry.formats.register(alias, cls)

    def __init__(
        self,
        path: str | os.PathLike[str] | h5py.Group,
        mode: Mode | None = None,
        *,
        profile: str | Profile | None = None,
        locking: bool | None = None,
        libver: Any = None,
    ) -> None:
        defaults = _DEFAULTS.get() or {}
        mode = mode or defaults.get("mode")
        profile = profile or defaults.get("profile")
        super().__init__(path, mode, profile=profile, locking=locking, libver=libver)
        # Header accessors (TVB's order), then the generic attributes.
        self.gid = Uuid(HasTraits.gid, self)
        self.written_by = Scalar(Attr(str), self, name=self.KEY_WRITTEN_BY)
        self.create_date = Scalar(Attr(str, required=False), self, name="create_date")
        self.type = Scalar(Attr(str, required=False), self, name="type")
        for field, ftype in GENERIC_FIELDS.items():
            klass = Uuid if ftype is uuid.UUID else Scalar
            setattr(self, field, klass(Attr(ftype, required=False), self, name=field))

    # ------------------------------------------------------------- accessors
    def iter_accessors(self) -> Iterator[Accessor]:
        """Every accessor of this format in assignment order (headers first)."""
        for value in list(vars(self).values()):
            if isinstance(value, Accessor):
                yield value

    def iter_datasets(self) -> Iterator[DataSet]:
        """The :class:`DataSet` accessors only."""
        for accessor in self.iter_accessors():
            if isinstance(accessor, DataSet):
                yield accessor

    def declare_fields(
        self, datatype: type[HasTraits], *, exclude: Sequence[str] = ()
    ) -> None:
        """Create an accessor for every field of ``datatype`` that has none yet, chosen by
        the field's type: NArray → DataSet, UUID → Uuid, HasTraits → Reference,
        list/dict → Json, Enum → Enum, a scipy sparse type → SparseMatrix, else Scalar."""
        for name in datatype.declarative_attrs:
            if name in exclude or isinstance(vars(self).get(name), Accessor):
                continue
            trait = datatype.trait(name)
            ft = trait.field_type
            klass: type[Accessor] = Scalar
            if isinstance(trait, NArray):
                klass = DataSet
            elif isinstance(ft, type) and issubclass(ft, HasTraits):
                klass = Reference
            elif ft in (list, dict):
                klass = Json
            elif isinstance(ft, type) and issubclass(ft, enum.Enum):
                klass = Enum
            elif getattr(ft, "__module__", "").startswith("scipy.sparse"):
                klass = SparseMatrix
            elif ft is uuid.UUID:
                klass = Uuid
            setattr(self, name, klass(trait, self))

    # ------------------------------------------------------------ bulk I/O
    def store(
        self, datatype: Any, scalars_only: bool = False, store_references: bool = True
    ) -> None:
        """Write every bound field of ``datatype``; independent accessors are skipped.

        All values are validated before the file is touched, so a bad field writes
        nothing. ``scalars_only`` writes only attribute-backed fields (for streaming:
        store the header, then ``append``); ``store_references=False`` skips
        :class:`Reference` fields.
        """
        plan = []
        for acc in self.iter_accessors():
            if not acc.is_bound or (scalars_only and not acc.is_scalar):
                continue
            if not store_references and isinstance(acc, Reference):
                continue
            field = acc.trait.field_name
            if not hasattr(datatype, field):  # type: ignore[arg-type]
                raise InvalidInputError(
                    f"Cannot store {type(datatype).__name__} with {type(self).__name__}: "
                    f"it has no field {field!r} ({acc!r}).",
                    field=field,
                )
            plan.append((acc, acc.prepare(getattr(datatype, field))))  # type: ignore[arg-type]
        with self._writing() as group:
            self._before_write(group)
            for acc, prepared in plan:
                acc.write(group, prepared)
            if self.profile.store_writes_type and isinstance(datatype, HasTraits):
                group.attrs[self.profile.key("type")] = type(datatype).registered_name

    def load_into(self, datatype: Any) -> Any:
        """Set every bound field of ``datatype`` from the file and return it.

        References are not followed. A missing optional field becomes ``None``; a missing
        required one raises :class:`~bsb_store.exceptions.MissingDataError`.
        """
        with self._reading() as group:
            for acc in self.iter_accessors():
                if not acc.is_bound or isinstance(acc, (Reference, ReferenceList)):
                    continue
                try:
                    value = acc.read(group)
                except MissingDataError:
                    if acc.trait.required:
                        raise
                    value = None
                try:
                    setattr(datatype, acc.trait.field_name, value)  # type: ignore[arg-type]
                except (InvalidInputError, DtypeError) as e:
                    raise FormatError(
                        f"{acc.name!r} in {self.describe()} does not fit "
                        f"{type(datatype).__name__}.{acc.trait.field_name}: {e.msg}",
                        path=str(self.path),
                        name=acc.name,
                    ) from e
        return datatype

    def gather_references(self) -> list[tuple[Attr, Any]]:
        """``(field, UUID or None)`` for each Reference, ``(field, [UUID, ...])`` for each
        ReferenceList; absent links give ``None``/``[]``."""
        found: list[tuple[Attr, Any]] = []
        with self._reading() as group:
            for acc in self.iter_accessors():
                if isinstance(acc, (Reference, ReferenceList)):
                    try:
                        found.append((acc.trait, acc.read(group)))
                    except MissingDataError:
                        found.append((acc.trait, [] if isinstance(acc, Json) else None))
        return found

    # ------------------------------------------------------- generic metadata
    def store_generic_attributes(
        self, generic: GenericAttributes | None = None, create: bool = True
    ) -> None:
        """Write the generic attributes (TVB's ``GenericAttributes`` fields).

        Booleans are copied; strings and ``parent_burst`` only when set (TVB's merge).
        With ``create`` the ``create_date`` header is set to now.
        """
        current = GenericAttributes()
        if generic is not None:
            current.fill_from(generic)
        with self._writing() as group:
            self._before_write(group)
            profile = self.profile
            if create:
                group.attrs[profile.key("create_date")] = profile.encode(
                    _dt.datetime.now()
                )
            for field in GENERIC_FIELDS:
                value = getattr(current, field)
                key = profile.key(field)
                if value is not None:
                    group.attrs[key] = profile.encode(value)
                elif key in group.attrs:
                    del group.attrs[key]

    def load_generic_attributes(self) -> GenericAttributes:
        """Read the generic attributes; absent ones keep their defaults."""
        generic = GenericAttributes()
        with self._reading() as group:
            for field, ftype in {**GENERIC_FIELDS, "create_date": _dt.datetime}.items():
                raw = group.attrs.get(self.profile.key(field))
                if raw is not None:
                    try:
                        setattr(generic, field, decode_as(raw, ftype))
                    except TypeError as e:
                        raise FormatError(
                            f"Generic attribute {field!r} in {self.describe()} holds "
                            f"{raw!r}: {e}.",
                            path=str(self.path),
                        ) from e
        return generic

    def store_metadata_param(self, key: str, value: Any) -> None:
        """Write an arbitrary root attribute ``key`` (with the profile's prefix and
        encodings); ``None`` removes it."""
        # Encoded first: a value that cannot be stored leaves the file untouched.
        encoded = None if value is None else self.profile.encode(value)
        with self._writing() as group:
            self._before_write(group)
            name = self.profile.key(key)
            if encoded is None:
                if name in group.attrs:
                    del group.attrs[name]
            else:
                group.attrs[name] = encoded

    def get_metadata_param(self, key: str) -> Any:
        """Read the root attribute ``key`` (decoded), or ``None`` if it is absent."""
        with self._reading() as group:
            raw = group.attrs.get(self.profile.key(key))
        return None if raw is None else self.profile.decode(raw)

    # ------------------------------------------------------ self-description
    @classmethod
    def from_group(
        cls: type[F], group: h5py.Group, *, profile: str | Profile | None = None
    ) -> F:
        """Bind this format class to an open h5py group (the caller owns the handle).

        Works with TVB-style subclasses whose ``__init__`` takes only a path.
        """
        return _construct(cls, group, None, profile)

    @classmethod
    def from_file(
        cls: type[F],
        path: str | os.PathLike[str],
        mode: Mode = "r",
        *,
        default: type | None = None,
    ) -> F:
        """Open ``path`` with the class named by its ``written_by`` header.

        :param default: class to use when the file has no ``written_by``.
        :raises UnknownFormatError: no registered class has that name.
        :raises FormatError: the class found is not a subclass of ``cls``.
        """
        klass = cls.h5_class_from_file(path, default=default)
        if not issubclass(klass, cls):
            raise FormatError(
                f"'{path}' was written by {klass.registered_name}, which is not a "
                f"{cls.__name__}.",
                path=str(path),
            )
        return _construct(klass, path, mode, None)

    @staticmethod
    def h5_class_from_file(
        path: str | os.PathLike[str], default: type | None = None
    ) -> type[H5File]:
        """The format **class** named by the file's ``written_by`` header.

        Resolved through the registry only; nothing named in a file is imported.
        """
        name = _read_header(path, H5File.KEY_WRITTEN_BY)
        if name is None:
            if default is not None:
                return default
            raise UnknownFormatError(
                f"'{path}' has no written_by header: cannot tell which format class "
                "wrote it (pass default=... to choose one).",
                path=str(path),
            )
        try:
            return registry.formats.get(name)
        except UnknownFormatError as e:
            raise UnknownFormatError(
                f"'{path}' was written by {name!r}, which is not a registered format "
                f"class. {e.msg}",
                path=str(path),
                value=name,
            ) from None

    @staticmethod
    def determine_type(path: str | os.PathLike[str]) -> type[HasTraits]:
        """The datatype class named by the file's ``type`` header (:class:`HasTraits`
        when absent), resolved through the datatype registry."""
        name = _read_header(path, "type")
        if name is None:
            return HasTraits
        try:
            return registry.datatypes.get(name)
        except UnknownFormatError as e:
            raise UnknownFormatError(
                f"'{path}' holds type {name!r}, which is not a registered datatype. "
                f"{e.msg}",
                path=str(path),
                value=name,
            ) from None


registry.formats.register(H5File.registered_name, H5File)


def _read_header(path: str | os.PathLike[str], name: str) -> str | None:
    probe = H5File(path, mode="r")
    with probe._reading() as group:
        raw = group.attrs.get(probe.profile.key(name))
    return None if raw is None else decode_as(raw, str)


def _construct(klass: type[F], target: Any, mode: Mode | None, profile: Any) -> F:
    kwargs: dict[str, Any] = {}
    try:
        params = inspect.signature(klass.__init__).parameters
    except (TypeError, ValueError):  # pragma: no cover - builtins only
        params = {}  # type: ignore[assignment]
    takes_kwargs = any(p.kind is p.VAR_KEYWORD for p in params.values())
    if mode is not None and ("mode" in params or takes_kwargs):
        kwargs["mode"] = mode
    if profile is not None and ("profile" in params or takes_kwargs):
        kwargs["profile"] = profile
    token = _DEFAULTS.set({"mode": mode, "profile": profile})
    try:
        return klass(target, **kwargs)
    finally:
        _DEFAULTS.reset(token)
