"""Accessors: one declared field of a format, read and written through its owning file.

An accessor is built from a field declaration (an :class:`~bsb_store.h5.Attr`, usually the
class-level field of a datatype such as ``Volume.origin``), the owning
:class:`~bsb_store.h5.H5File` and an optional on-disk ``name``. A field bound to a
:class:`~bsb_store.h5.HasTraits` class takes part in :meth:`H5File.store
<bsb_store.h5.H5File.store>`/:meth:`~bsb_store.h5.H5File.load_into`; an *independent*
accessor (an unbound field plus ``name=``) is only used directly.

Every accessor splits a write into :meth:`Accessor.prepare` (validation, no I/O) and
:meth:`Accessor.write` (I/O), so a bulk store validates every field before touching the
file. This module holds the attribute-backed accessors; arrays live in
:mod:`bsb_store.h5.datasets`.
"""

from __future__ import annotations

import enum
import json
import uuid
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, ClassVar

import h5py

from ..exceptions import DtypeError, FormatError, InvalidInputError, MissingDataError
from .encoding import NATIVE, decode_as, decode_text, format_error
from .traits import Attr

if TYPE_CHECKING:
    from .file import H5File


class Accessor:
    """Base class of accessors.

    :param trait: the field declaration; its ``field_name`` is the default on-disk name.
    :param h5file: the file (or group-bound format) that owns this accessor.
    :param name: on-disk name overriding the field's name; required for unbound fields.
    :raises InvalidInputError: if neither ``name`` nor a bound field gives a name.
    """

    #: Written by ``H5File.store(..., scalars_only=True)``.
    is_scalar: ClassVar[bool] = False

    def __init__(self, trait: Attr, h5file: H5File, name: str | None = None) -> None:
        if not isinstance(trait, Attr):
            raise InvalidInputError(
                f"{type(self).__name__} needs a field declaration (Attr/NArray): got "
                f"{type(trait).__name__} {trait!r}.",
                value=trait,
            )
        if name is None and trait.field_name is None:
            raise InvalidInputError(
                f"Independent {type(self).__name__} for {trait!r} needs a name: pass "
                "name='...' or use a field declared on a HasTraits class.",
                value=trait,
            )
        self.trait = trait
        self.owner = h5file
        self.field_name: str = name if name is not None else trait.field_name  # type: ignore[assignment]

    @property
    def name(self) -> str:
        """The on-disk name of the field (before any profile prefix)."""
        return self.field_name

    @property
    def is_bound(self) -> bool:
        """Whether the field is declared on a class (and so stored in bulk)."""
        return self.trait.field_name is not None

    # -------------------------------------------------------------- public API
    def store(self, value: Any) -> None:
        """Validate ``value`` and write it. ``None`` for an optional field removes it."""
        prepared = self.prepare(value)
        with self.owner._writing() as group:
            self.owner._before_write(group)
            self.write(group, prepared)

    def load(self) -> Any:
        """Read the value.

        :raises MissingDataError: if it is absent from the file.
        """
        with self.owner._reading() as group:
            return self.read(group)

    def exists(self) -> bool:
        """Whether the field is present in the file (``False`` if the file is absent)."""
        if not self.owner._can_read():
            return False
        with self.owner._reading() as group:
            return self._present(group)

    def remove(self) -> None:
        """Delete the field from the file; absent fields (or files) are ignored."""
        self.owner._check_writable()
        if not self.owner._can_read():
            return
        with self.owner._writing(create=False) as group:
            if self._present(group):
                self.owner._before_write(group)
                self._delete(group)

    # ------------------------------------------------------- subclass contract
    def prepare(self, value: Any) -> Any:
        """Validate ``value`` and return what :meth:`write` needs; no I/O."""
        raise NotImplementedError

    def write(self, group: h5py.Group, prepared: Any) -> None:
        """Write a value returned by :meth:`prepare` into ``group``."""
        raise NotImplementedError

    def read(self, group: h5py.Group) -> Any:
        """Read the value from ``group``."""
        raise NotImplementedError

    def _present(self, group: h5py.Group) -> bool:
        raise NotImplementedError

    def _delete(self, group: h5py.Group) -> None:
        raise NotImplementedError

    # ----------------------------------------------------------------- helpers
    def _where(self) -> str:
        return self.owner.describe()

    def _missing(self, what: str) -> MissingDataError:
        return MissingDataError(
            f"{what} {self.field_name!r} is absent from {self._where()} "
            f"(field {self.trait.qualified_name}, {type(self.owner).__name__}).",
            path=self._where(),
            name=self.field_name,
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.trait!r}, name={self.field_name!r})"


class Scalar(Accessor):
    """A root attribute of the file (or bound group) holding one value.

    ``str``, ``int``, ``float``, ``bool``, UUIDs, datetimes and small numeric arrays are
    supported; ``None`` means *absent*: storing it deletes the attribute. Values are read
    fresh every time (no stale cache).
    """

    is_scalar = True

    def prepare(self, value: Any) -> Any:
        value = self.trait.validate(value)
        if value is not None:
            self._check_encodable(value)  # fail here, before any write
        return value

    def _check_encodable(self, value: Any) -> None:
        """Raise, naming the field, if ``value`` has no attribute encoding (an object,
        an int beyond int64, ...); no I/O.

        :raises InvalidInputError: the value cannot be stored as an attribute.
        """
        try:
            NATIVE.encode(value)
        except InvalidInputError as e:
            raise InvalidInputError(
                f"{self.trait.qualified_name} (attribute {self.field_name!r}): {e}",
                field=self.trait.qualified_name,
                value=value,
            ) from None

    def key(self) -> str:
        """The attribute name, with the profile's prefix."""
        return self.owner.profile.key(self.field_name)

    def write(self, group: h5py.Group, prepared: Any) -> None:
        key = self.key()
        if prepared is None:
            if key in group.attrs:
                del group.attrs[key]
        else:
            group.attrs[key] = self.owner.profile.encode(self._to_stored(prepared))

    def _to_stored(self, value: Any) -> Any:
        return value

    def read(self, group: h5py.Group) -> Any:
        key = self.key()
        if key not in group.attrs:
            raise self._missing("Attribute")
        raw = group.attrs[key]
        try:
            return self._from_stored(raw)
        except (TypeError, ValueError, UnicodeDecodeError) as e:
            raise format_error(self._where(), f"attribute {key!r}", raw, e) from e

    def _from_stored(self, raw: Any) -> Any:
        if self.trait.field_type is object:
            return self.owner.profile.decode(raw)
        return decode_as(raw, self.trait.field_type)

    def _present(self, group: h5py.Group) -> bool:
        return self.key() in group.attrs

    def _delete(self, group: h5py.Group) -> None:
        del group.attrs[self.key()]


class Uuid(Scalar):
    """A UUID attribute: canonical form natively, ``urn:uuid:...`` in the TVB profile.

    Reading accepts any form :class:`uuid.UUID` parses (urn, canonical, 32 hex digits).
    """

    def prepare(self, value: Any) -> Any:
        if isinstance(value, str):
            raise DtypeError(
                f"{self.trait.qualified_name} expects a uuid.UUID: got str {value!r}.",
                value=value,
            )
        return super().prepare(value)

    def _from_stored(self, raw: Any) -> uuid.UUID:
        return decode_as(raw, uuid.UUID)


class Reference(Uuid):
    """A link to another object, stored as that object's UUID.

    Accepts a :class:`uuid.UUID` or any object with a ``gid`` UUID attribute. Bulk
    :meth:`~bsb_store.h5.H5File.load_into` never follows references; use
    :meth:`load` or :meth:`~bsb_store.h5.H5File.gather_references`.
    """

    def prepare(self, value: Any) -> Any:
        if value is None:
            if self.trait.required:
                raise InvalidInputError(
                    f"{self.trait.qualified_name} is a required reference: got None.",
                    field=self.trait.qualified_name,
                )
            return None
        gid = value if isinstance(value, uuid.UUID) else getattr(value, "gid", None)
        if not isinstance(gid, uuid.UUID):
            raise DtypeError(
                f"{self.trait.qualified_name} expects a UUID or an object with a UUID "
                f"'gid': got {type(value).__name__} {value!r}.",
                value=value,
            )
        return gid


class Enum(Scalar):
    """An :class:`enum.Enum` member, stored as its ``value`` and matched back by value."""

    def _enum(self) -> type[enum.Enum]:
        ft = self.trait.field_type
        if not (isinstance(ft, type) and issubclass(ft, enum.Enum)):
            raise InvalidInputError(
                f"Enum accessor {self.field_name!r} needs a field of an enum.Enum type: "
                f"got {ft!r}."
            )
        return ft

    def prepare(self, value: Any) -> Any:
        member = self.trait.validate(value)
        if member is not None:
            self._check_encodable(member.value)
        return member

    def _to_stored(self, value: Any) -> Any:
        return value.value

    def _from_stored(self, raw: Any) -> enum.Enum:
        stored = self.owner.profile.decode(raw)
        for member in self._enum():
            if member.value == stored or str(member.value) == str(stored):
                return member
        raise ValueError(f"no member of {self._enum().__name__} has the value {stored!r}")


class Json(Scalar):
    """A JSON text attribute, with pluggable encoder and decoder classes.

    :param json_encoder: a :class:`json.JSONEncoder` subclass used by :func:`json.dumps`.
    :param json_decoder: a :class:`json.JSONDecoder` subclass used by :func:`json.loads`.

    An optional ``None`` is absent natively, and the text ``"null"`` in the TVB profile
    (TVB cannot read an absent JSON attribute).
    """

    def __init__(
        self,
        trait: Attr,
        h5file: H5File,
        name: str | None = None,
        json_encoder: type[json.JSONEncoder] | None = None,
        json_decoder: type[json.JSONDecoder] | None = None,
    ) -> None:
        super().__init__(trait, h5file, name)
        self.json_encoder = json_encoder
        self.json_decoder = json_decoder

    def prepare(self, value: Any) -> Any:
        """Validate ``value`` and return its JSON text (``None`` for ``None``).

        :raises InvalidInputError: the value cannot be encoded, or a dict in it (at any
            depth, also one the encoder's ``default`` returns) has a key that is not a
            ``str``: JSON would turn ``0`` into ``"0"`` and ``load`` would not give back
            what was stored.
        """
        value = self.trait.validate(value)
        field = self.trait.qualified_name
        try:
            _check_json_keys(value, field)
            text = json.dumps(value, cls=_key_checking(self.json_encoder, field))
        except (TypeError, ValueError, RecursionError) as e:
            if isinstance(e, InvalidInputError):
                raise
            raise InvalidInputError(
                f"{field} cannot be encoded as JSON: {e} (value {value!r:.200}).",
                field=field,
                value=value,
            ) from e
        if value is None:
            return None
        return text

    def write(self, group: h5py.Group, prepared: Any) -> None:
        if prepared is None and self.owner.profile.json_none_as_null:
            prepared = "null"
        super().write(group, prepared)

    def _from_stored(self, raw: Any) -> Any:
        return json.loads(decode_text(raw), cls=self.json_decoder)


def _check_json_keys(value: Any, field: str, path: str = "") -> None:
    """Refuse dict keys that are not ``str`` anywhere in ``value`` (dicts, lists and
    tuples are walked; a container met twice on the current path is left for
    :func:`json.dumps` to report as circular).

    :raises InvalidInputError: naming the field, the key and where it is.
    """
    stack: list[tuple[Any, str]] = [(value, path)]
    seen: set[int] = set()
    while stack:
        obj, where = stack.pop()
        if isinstance(obj, dict):
            if id(obj) in seen:
                continue
            seen.add(id(obj))
            for key, item in obj.items():
                if not isinstance(key, str):
                    raise InvalidInputError(
                        f"{field} cannot be stored as JSON: the dict at "
                        f"{where or 'the top level'} has the key {key!r} of type "
                        f"{type(key).__name__}; JSON object keys are strings, so it "
                        "would not load back as given. Use str keys.",
                        field=field,
                        key=key,
                    )
                stack.append((item, f"{where}[{key!r}]"))
        elif isinstance(obj, (list, tuple)):
            if id(obj) in seen:
                continue
            seen.add(id(obj))
            stack.extend((item, f"{where}[{i}]") for i, item in enumerate(obj))


def _key_checking(
    encoder: type[json.JSONEncoder] | None, field: str
) -> type[json.JSONEncoder]:
    """An encoder class like ``encoder`` whose ``default`` results are key-checked too
    (a custom encoder may turn an object into a dict with non-str keys)."""
    base = encoder or json.JSONEncoder

    class _KeyChecking(base):  # type: ignore[valid-type, misc]
        def default(self, o: Any) -> Any:
            out = super().default(o)
            _check_json_keys(out, field, f"<{type(o).__name__} encoded as JSON>")
            return out

    return _KeyChecking


class ReferenceList(Json):
    """A list of links, stored as a JSON list of 32-digit hex gids (TVB's convention)."""

    def prepare(self, value: Any) -> Any:
        if value is None:
            return super().prepare(None)
        if not isinstance(value, Iterable) or isinstance(value, (str, bytes)):
            raise DtypeError(
                f"{self.trait.qualified_name} expects a list of objects with gids or "
                f"UUIDs: got {value!r}.",
                value=value,
            )
        gids = []
        for item in value:
            gid = item if isinstance(item, uuid.UUID) else getattr(item, "gid", None)
            if not isinstance(gid, uuid.UUID):
                raise DtypeError(
                    f"{self.trait.qualified_name}: {item!r} is neither a UUID nor has a "
                    "UUID 'gid'.",
                    value=item,
                )
            gids.append(gid.hex)
        return json.dumps(gids)

    def _from_stored(self, raw: Any) -> list[uuid.UUID]:
        value = json.loads(decode_text(raw))
        if value is None:
            return []
        if not isinstance(value, list):
            raise ValueError("expected a JSON list of gids")
        return [uuid.UUID(str(v)) for v in value]


def check_group(node: Any, where: str, name: str) -> h5py.Group:
    """``node`` if it is a group, else a :class:`FormatError`."""
    if not isinstance(node, h5py.Group):
        raise FormatError(
            f"{name!r} in {where} is a {type(node).__name__}, expected a group.",
            path=where,
            name=name,
        )
    return node
