"""Attribute value encodings and the profiles that choose between them.

A :class:`Profile` bundles every on-disk naming and encoding choice of the format layer:
the attribute prefix, how booleans and UUIDs are written, the names of the statistics
attributes, the sparse matrix layout. Two profiles exist: :data:`NATIVE` (defined here)
and ``"tvb"`` (defined in :mod:`bsb_store.h5.tvb`, registered when the package is
imported). Everything in this module is a pure function of its arguments: no file I/O.
"""

from __future__ import annotations

import datetime as _dt
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import h5py
import numpy as np

from ..exceptions import FormatError, InvalidInputError

#: Prefix TVB puts in front of booleans it stores as text.
BOOL_PREFIX = "bool:"
#: The on-disk dtype of text arrays: variable-length UTF-8 strings.
TEXT_DTYPE = h5py.string_dtype("utf-8")

#: The range of the integers an attribute can hold (they are stored as int64).
_INT64_MIN, _INT64_MAX = int(np.iinfo(np.int64).min), int(np.iinfo(np.int64).max)

_TRUE_WORDS = frozenset({"yes", "true", "t", "1"})
_FALSE_WORDS = frozenset({"no", "false", "f", "0"})


@dataclass(frozen=True)
class Profile:
    """The naming and encoding conventions one family of files follows.

    Profiles are immutable values; an :class:`~bsb_store.h5.H5File` picks one when it is
    created (``profile="native"`` or ``profile="tvb"``) or detects it from an existing
    file's header attributes.
    """

    name: str
    #: Prefix of every attribute the layer writes (``""`` or ``"TVB_"``).
    prefix: str
    #: Unprefixed name of the header holding the format version.
    version_key: str
    #: A version every file of this profile carries, or ``None`` to use the format
    #: class's own :attr:`~bsb_store.h5.H5File.format_version`.
    fixed_version: int | None
    #: Write Python booleans as ``"bool:True"``/``"bool:False"`` text.
    bools_as_text: bool
    #: Write UUIDs as ``"urn:uuid:..."`` rather than the canonical 36-character form.
    uuid_as_urn: bool
    #: Unprefixed names of the statistics attributes, keyed by statistic.
    stat_keys: Mapping[str, str]
    #: Write the element count next to the statistics (needed to detect stale ones).
    stats_count: bool
    #: Write ``''`` for statistics that cannot be computed (instead of omitting them).
    empty_stat_as_text: bool
    #: Sparse matrices as ``<name>data``/``<name>indptr``/``<name>indices`` plus a
    #: placeholder dataset (TVB) instead of a group ``<name>/{data,indices,indptr}``.
    flat_sparse: bool
    #: Write an optional ``Json`` field that is ``None`` as the text ``"null"``.
    json_none_as_null: bool
    #: ``strftime`` format of the ``create_date`` header.
    date_format: str
    #: ``H5File.store`` also writes the ``type`` header (the datatype's registered name).
    store_writes_type: bool = False
    #: Extra keyword arguments for datasets (none by default).
    extra: Mapping[str, Any] = field(default_factory=dict)

    def key(self, name: str) -> str:
        """The attribute name under which the field ``name`` is stored."""
        return self.prefix + name

    def unkey(self, key: str) -> str | None:
        """The field name of attribute ``key``, or ``None`` if it lacks our prefix."""
        if not key.startswith(self.prefix):
            return None
        return key[len(self.prefix) :]

    # ------------------------------------------------------------------ encoding
    def encode(self, value: Any) -> Any:
        """Turn a Python value into something h5py stores as an attribute."""
        if value is None:
            raise InvalidInputError("None has no attribute encoding; it means 'absent'.")
        if isinstance(value, (bool, np.bool_)):
            return (
                f"{BOOL_PREFIX}{bool(value)}" if self.bools_as_text else np.bool_(value)
            )
        if isinstance(value, uuid.UUID):
            return value.urn if self.uuid_as_urn else str(value)
        if isinstance(value, _dt.datetime):
            return value.strftime(self.date_format)
        if isinstance(value, str):
            return value
        if isinstance(value, int):
            if not _INT64_MIN <= value <= _INT64_MAX:
                raise InvalidInputError(
                    f"Cannot store the int {value} as an HDF5 attribute: it is outside "
                    f"the int64 range [{_INT64_MIN}, {_INT64_MAX}].",
                    value=value,
                )
            return np.int64(value)
        if isinstance(value, float):
            return np.float64(value)
        if isinstance(value, (np.generic, np.ndarray)):
            return _encode_numpy(value)
        if isinstance(value, (list, tuple)):
            return _encode_numpy(np.asarray(value))
        raise InvalidInputError(
            f"Cannot store {type(value).__name__} value {value!r} as an HDF5 attribute: "
            "expected str, bool, int, float, UUID, datetime or a numeric array."
        )

    def decode(self, raw: Any) -> Any:
        """Turn a raw attribute value into a Python value, without a declared type.

        Bytes become ``str``; numpy scalars become Python scalars; in profiles that write
        booleans as text, ``"bool:..."`` strings become ``bool``.
        """
        if isinstance(raw, (bytes, np.bytes_, str, np.str_)):
            text = decode_text(raw)
            if self.bools_as_text and text.startswith(BOOL_PREFIX):
                return decode_bool(text)
            return text
        if isinstance(raw, np.generic):
            return raw.item()
        if isinstance(raw, np.ndarray) and raw.dtype.kind in "OS":
            return np.array([decode_text(x) for x in raw.ravel()], dtype=str).reshape(
                raw.shape
            )
        return raw


def _encode_numpy(value: np.generic | np.ndarray) -> Any:
    if value.dtype.kind == "U":
        if value.ndim == 0:
            return str(value)
        return np.asarray(value, dtype=TEXT_DTYPE)
    if value.dtype.kind == "O":
        raise InvalidInputError(
            f"Cannot store an object array {value!r} as an attribute."
        )
    return value


def decode_text(raw: Any) -> str:
    """Decode bytes (UTF-8) or ``str`` attribute values to ``str``, never ``"b'...'"``."""
    if isinstance(raw, (bytes, np.bytes_)):
        return bytes(raw).decode("utf-8")
    if isinstance(raw, str):
        return str(raw)
    raise TypeError(f"expected text, got {type(raw).__name__} {raw!r}")


def decode_bool(raw: Any) -> bool:
    """Read a boolean written natively, as ``"bool:True"`` text, or as 0/1."""
    if isinstance(raw, (bool, np.bool_)):
        return bool(raw)
    if isinstance(raw, (int, np.integer)) and raw in (0, 1):
        return bool(raw)
    if isinstance(raw, (bytes, np.bytes_, str)):
        text = decode_text(raw)
        word = text[len(BOOL_PREFIX) :] if text.startswith(BOOL_PREFIX) else text
        if word.strip().lower() in _TRUE_WORDS:
            return True
        if word.strip().lower() in _FALSE_WORDS:
            return False
    raise TypeError(f"expected a boolean, got {type(raw).__name__} {raw!r}")


def decode_uuid(raw: Any) -> uuid.UUID:
    """Read a UUID in any form ``uuid.UUID`` accepts (urn, canonical, 32 hex digits)."""
    try:
        return uuid.UUID(decode_text(raw))
    except ValueError as e:
        raise TypeError(f"expected a UUID, got {raw!r}") from e


def decode_as(raw: Any, field_type: type) -> Any:
    """Decode a raw attribute value into ``field_type``.

    Raises :class:`TypeError` when the stored value cannot represent that type without
    guessing (an int attribute read as ``str``, a non-integral float read as ``int``);
    callers turn that into a :class:`~bsb_store.exceptions.FormatError` naming the file.
    """
    if field_type is bool:
        return decode_bool(raw)
    if isinstance(field_type, type) and issubclass(field_type, uuid.UUID):
        return decode_uuid(raw)
    if field_type is str:
        return decode_text(raw)
    if field_type is int:
        if isinstance(raw, (int, np.integer)) and not isinstance(raw, (bool, np.bool_)):
            return int(raw)
        if isinstance(raw, (float, np.floating)) and float(raw).is_integer():
            return int(raw)
        raise TypeError(f"expected an integer, got {type(raw).__name__} {raw!r}")
    if field_type is float:
        if isinstance(raw, (int, float, np.integer, np.floating)) and not isinstance(
            raw, (bool, np.bool_)
        ):
            return float(raw)
        raise TypeError(f"expected a number, got {type(raw).__name__} {raw!r}")
    if field_type in (list, tuple):
        value = raw.tolist() if isinstance(raw, np.ndarray) else [raw]
        return field_type(value)
    if field_type is np.ndarray:
        return np.asarray(raw)
    if field_type is _dt.datetime:
        return parse_date(decode_text(raw))
    return raw.item() if isinstance(raw, np.generic) else raw


def parse_date(text: str) -> _dt.datetime | None:
    """Parse ``create_date`` values: ISO 8601 or TVB's ``%Y-%m-%d,%H-%M-%S[.%f]``."""
    if text in ("", "None"):
        return None
    for fmt in ("%Y-%m-%d,%H-%M-%S.%f", "%Y-%m-%d,%H-%M-%S"):
        try:
            return _dt.datetime.strptime(text, fmt)
        except ValueError:
            pass
    try:
        return _dt.datetime.fromisoformat(text)
    except ValueError as e:
        raise TypeError(f"expected a date, got {text!r}") from e


def is_text_dtype(dtype: Any) -> bool:
    """Whether ``dtype`` means variable-length text (``str`` or an h5py string dtype)."""
    if dtype is str or dtype is np.str_:
        return True
    dt = np.dtype(dtype)
    return dt.kind == "U" or (dt.kind == "O" and h5py.check_string_dtype(dt) is not None)


def format_error(where: str, what: str, raw: Any, err: Exception) -> FormatError:
    """A :class:`FormatError` for a stored value that cannot be decoded."""
    return FormatError(
        f"Cannot decode {what} in {where}: stored value {raw!r} ({err}).",
        path=where,
        value=raw,
    )


#: The native profile: plain attribute names, real booleans, canonical UUID strings,
#: a per-class ``format_version``, statistics with an element count, sparse groups.
NATIVE = Profile(
    name="native",
    prefix="",
    version_key="format_version",
    fixed_version=None,
    bools_as_text=False,
    uuid_as_urn=False,
    stat_keys={
        "count": "count",
        "minimum": "minimum",
        "maximum": "maximum",
        "mean": "mean",
        "is_finite": "is_finite",
        "has_complex": "has_complex",
    },
    stats_count=True,
    empty_stat_as_text=False,
    flat_sparse=False,
    json_none_as_null=False,
    date_format="%Y-%m-%dT%H:%M:%S.%f",
    store_writes_type=True,
)

_PROFILES: dict[str, Profile] = {"native": NATIVE}


def register_profile(profile: Profile) -> None:
    """Make ``profile`` selectable by name (``H5File(..., profile=name)``)."""
    _PROFILES[profile.name] = profile


def get_profile(profile: str | Profile | None) -> Profile:
    """Resolve a profile name (or pass a :class:`Profile` through)."""
    if profile is None:
        return NATIVE
    if isinstance(profile, Profile):
        return profile
    try:
        return _PROFILES[profile]
    except KeyError:
        raise InvalidInputError(
            f"Unknown profile {profile!r}: expected one of {sorted(_PROFILES)}.",
            value=profile,
        ) from None


def detect_profile(attrs: Any) -> Profile | None:
    """The profile whose header attributes (``written_by`` or the version key) ``attrs``
    holds, preferring prefixed profiles; ``None`` if there are no headers."""
    for profile in sorted(_PROFILES.values(), key=lambda p: -len(p.prefix)):
        if (
            profile.key("written_by") in attrs
            or profile.key(profile.version_key) in attrs
        ):
            return profile
    return None


def profile_names() -> list[str]:
    """Names of the registered profiles."""
    return sorted(_PROFILES)
