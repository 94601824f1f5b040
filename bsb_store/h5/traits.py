"""Declared, typed, validated fields: :class:`HasTraits`, :class:`Attr`, :class:`NArray`.

A datatype is a class whose class attributes are fields::

    class Volume(HasTraits):
        origin = NArray(dtype=float, ndim=1, shape=(3,), doc="Position of voxel 0")
        voxel_unit = Attr(str, default="mm")

Each field learns its name and owner through ``__set_name__``, validates (and losslessly
converts) what is assigned to it, and is the single source of name, type, dtype, shape and
``required`` flag that the format layer's accessors reuse. Nothing here depends on TVB.

The lossless-cast rule (shared by :class:`NArray` and :meth:`DataSet.append
<bsb_store.h5.DataSet.append>`) is implemented by :func:`lossless_cast`.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Sequence
from typing import Any, ClassVar, overload

import numpy as np

from ..exceptions import DtypeError, InvalidInputError, ShapeError
from . import registry
from .encoding import TEXT_DTYPE, is_text_dtype

_MISSING: Any = object()


class Attr:
    """A declared field of a :class:`HasTraits` class.

    :param field_type: the Python type values must have. ``int``, ``float``, ``bool`` and
        ``str`` also accept the matching numpy scalars and convert them; ``float`` accepts
        integers. ``bool`` values are never accepted as numbers.
    :param default: value of the field until one is assigned.
    :param doc: what the field means (shown by documentation tools).
    :param label: a short human-readable name.
    :param required: whether ``None`` is refused (and a value missing on disk is an
        error).
    :param choices: if given, the values allowed.
    """

    #: Set by the owning class (``__set_name__``); ``None`` for an unbound field.
    field_name: str | None
    owner: type | None

    def __init__(
        self,
        field_type: type = object,
        default: Any = None,
        doc: str = "",
        label: str = "",
        required: bool = True,
        choices: Sequence[Any] | None = None,
    ) -> None:
        self.field_type = field_type
        self.default = default
        self.doc = doc
        self.label = label
        self.required = required
        self.choices = tuple(choices) if choices is not None else None
        self.field_name = None
        self.owner = None

    def __set_name__(self, owner: type, name: str) -> None:
        self.field_name = name
        self.owner = owner

    @overload
    def __get__(self, instance: None, owner: type) -> Attr: ...
    @overload
    def __get__(self, instance: object, owner: type) -> Any: ...
    def __get__(self, instance: object | None, owner: type | None = None) -> Any:
        if instance is None:
            return self
        return instance.__dict__.get(self.field_name, self.default)

    def __set__(self, instance: object, value: Any) -> None:
        instance.__dict__[self.field_name] = self.validate(value)

    @property
    def qualified_name(self) -> str:
        """``Owner.field`` for messages, or ``<unbound Attr>``."""
        if self.field_name is None:
            return f"<unbound {type(self).__name__}>"
        owner = self.owner.__name__ if self.owner is not None else "?"
        return f"{owner}.{self.field_name}"

    def validate(self, value: Any) -> Any:
        """Check ``value`` and return it converted to the declared type.

        :raises InvalidInputError: ``None`` for a required field, or a value outside
            ``choices``.
        :raises DtypeError: a value of the wrong type.
        """
        if value is None:
            if self.required:
                raise InvalidInputError(
                    f"{self.qualified_name} is required: got None, expected a "
                    f"{_type_name(self.field_type)}.",
                    field=self.qualified_name,
                )
            return None
        value = self._convert(value)
        if self.choices is not None and value not in self.choices:
            raise InvalidInputError(
                f"{self.qualified_name} must be one of {self.choices!r}: got {value!r}.",
                field=self.qualified_name,
                value=value,
            )
        return value

    def _convert(self, value: Any) -> Any:
        ft = self.field_type
        ok: bool
        if ft is bool:
            ok = isinstance(value, (bool, np.bool_))
        elif ft is int:
            ok = isinstance(value, (int, np.integer)) and not isinstance(
                value, (bool, np.bool_)
            )
        elif ft is float:
            ok = isinstance(value, (int, float, np.integer, np.floating)) and not (
                isinstance(value, (bool, np.bool_))
            )
        elif ft is str:
            ok = isinstance(value, str)
        else:
            ok = isinstance(value, ft)
        if not ok:
            raise DtypeError(
                f"{self.qualified_name} expects a {_type_name(ft)}: got "
                f"{type(value).__name__} {value!r}.",
                field=self.qualified_name,
                value=value,
            )
        if ft in (bool, int, float, str):
            return ft(value)
        return value

    def __repr__(self) -> str:
        ftype = _type_name(self.field_type)
        return f"{type(self).__name__}({ftype}, name={self.field_name!r})"


class NArray(Attr):
    """A numpy array field.

    :param dtype: the dtype stored, ``None`` for any. ``str`` (or an h5py string dtype)
        means variable-length UTF-8 text. Values are converted with :func:`lossless_cast`.
    :param ndim: the number of dimensions required, if any.
    :param shape: required shape; ``None`` entries match any length.
    """

    def __init__(
        self,
        dtype: Any = np.float64,
        ndim: int | None = None,
        shape: Sequence[int | None] | None = None,
        default: Any = None,
        doc: str = "",
        label: str = "",
        required: bool = True,
    ) -> None:
        super().__init__(np.ndarray, default, doc, label, required)
        self.is_text = dtype is not None and is_text_dtype(dtype)
        self.dtype: np.dtype | None = (
            None if dtype is None else TEXT_DTYPE if self.is_text else np.dtype(dtype)
        )
        self.shape = tuple(shape) if shape is not None else None
        if self.shape is not None and ndim is None:
            ndim = len(self.shape)
        if self.shape is not None and ndim != len(self.shape):
            raise InvalidInputError(f"NArray shape {self.shape} contradicts ndim={ndim}.")
        self.ndim = ndim

    def _convert(self, value: Any) -> np.ndarray:
        arr = as_array(value, self.qualified_name)
        arr = lossless_cast(arr, self.dtype, self.qualified_name)
        self.check_shape(arr.shape)
        return arr

    def check_shape(self, shape: tuple[int, ...], free_axis: int | None = None) -> None:
        """Check ``shape`` against ``ndim``/``shape``; ``free_axis`` may have any length.

        :raises ShapeError: naming the field, the shape given and the shape expected.
        """
        if self.ndim is not None and len(shape) != self.ndim:
            raise ShapeError(
                f"{self.qualified_name} expects {self.ndim} dimension(s)"
                f"{'' if self.shape is None else f' of shape {_fmt_shape(self.shape)}'}: "
                f"got shape {shape}.",
                field=self.qualified_name,
                value=shape,
            )
        if self.shape is None:
            return
        free = None if free_axis is None or not shape else free_axis % len(shape)
        for axis, (want, got) in enumerate(zip(self.shape, shape)):
            if want is not None and want != got and axis != free:
                raise ShapeError(
                    f"{self.qualified_name} expects shape {_fmt_shape(self.shape)}: got "
                    f"shape {shape}.",
                    field=self.qualified_name,
                    value=shape,
                )

    def __repr__(self) -> str:
        dtype = "str" if self.is_text else self.dtype
        return f"NArray(dtype={dtype}, ndim={self.ndim}, name={self.field_name!r})"


def _fmt_shape(shape: Sequence[int | None]) -> str:
    parts = ["N" if s is None else str(s) for s in shape]
    return "(" + ", ".join(parts) + ("," if len(parts) == 1 else "") + ")"


def _type_name(t: Any) -> str:
    return getattr(t, "__name__", repr(t))


def as_array(value: Any, what: str) -> np.ndarray:
    """``value`` as an ndarray; text and mappings are refused (they are not arrays)."""
    if isinstance(value, np.ndarray):
        return value
    if isinstance(value, (str, bytes, dict)) or value is None:
        raise DtypeError(
            f"{what} expects an array: got {type(value).__name__} {value!r}.", value=value
        )
    try:
        return np.asarray(value)
    except (ValueError, TypeError) as e:
        raise DtypeError(
            f"{what} expects an array: cannot convert {value!r} ({e})."
        ) from e


def lossless_cast(arr: np.ndarray, dtype: np.dtype | None, what: str) -> np.ndarray:
    """Convert ``arr`` to ``dtype`` only if no value can change.

    The rule:

    * ``dtype`` ``None`` accepts anything unchanged.
    * Text (``str``/vlen UTF-8) accepts ``U`` arrays, ``S`` arrays (decoded as UTF-8) and
      object arrays of ``str``; the result is a ``U`` array.
    * Fixed-length bytes ``S<n>`` accept ``S<m>`` with m <= n, and ASCII ``U`` text.
    * ``bool`` accepts only ``bool``.
    * Numbers accept bool and numbers numpy casts with ``"safe"`` casting (int8 → int64,
      float32 → float64, float → complex ...). Integers wider than the target float's
      mantissa (int64 → float64) are accepted when every value is exactly representable.
      Floats into ints, complex into floats, and narrowing casts are refused.

    :raises DtypeError: naming the source and target dtypes.
    """
    if dtype is None:
        return arr
    src = arr.dtype
    if is_text_dtype(dtype):
        if src.kind == "U":
            return arr
        if src.kind == "S":
            return np.char.decode(arr, "utf-8") if arr.size else arr.astype(str)
        if src.kind == "O" and all(isinstance(x, (str, bytes)) for x in arr.flat):
            return np.array(
                [x.decode("utf-8") if isinstance(x, bytes) else x for x in arr.flat],
                dtype=str,
            ).reshape(arr.shape)
        raise _dtype_error(what, src, "text")
    dst = np.dtype(dtype)
    if dst.kind == "S":
        if src.kind == "S" and src.itemsize <= dst.itemsize:
            return arr.astype(dst)
        if src.kind == "U" and src.itemsize // 4 <= dst.itemsize:
            try:
                return np.char.encode(arr, "ascii").astype(dst)
            except UnicodeEncodeError:
                pass
        raise _dtype_error(what, src, dst)
    if dst.kind == "b":
        if src.kind == "b":
            return arr
        raise _dtype_error(what, src, dst)
    if dst.kind in "iufc":
        if src.kind not in "biufc" or not np.can_cast(src, dst, "safe"):
            raise _dtype_error(what, src, dst)
        if src.kind in "iu" and dst.kind in "fc":
            bits = np.finfo(dst).nmant + 1
            if src.itemsize * 8 - (src.kind == "i") > bits and arr.size:
                limit = 2**bits
                lo, hi = int(arr.min()), int(arr.max())
                if lo < -limit or hi > limit:
                    raise DtypeError(
                        f"{what} cannot store {src} values in {dst} without rounding: "
                        f"the range [{lo}, {hi}] exceeds ±2**{bits}.",
                        value=(lo, hi),
                    )
        return arr.astype(dst, copy=False)
    if src == dst or np.can_cast(src, dst, "safe"):
        return arr.astype(dst, copy=False)
    raise _dtype_error(what, src, dst)


def _dtype_error(what: str, src: np.dtype, dst: Any) -> DtypeError:
    return DtypeError(
        f"{what} cannot store dtype {src} losslessly: expected {dst} or a dtype that "
        "converts to it without loss.",
        value=str(src),
    )


class HasTraits:
    """Base class of datatypes: a bag of declared :class:`Attr` fields plus a ``gid``.

    Keyword arguments of the constructor set fields (validated); fields not given take
    their default (arrays are copied). Subclasses register in the datatype registry under
    ``"<module>.<qualname>"`` or the ``name=`` class keyword, with extra ``aliases=``.
    """

    #: Unique id of the object, a fresh :func:`uuid.uuid4` per instance by default.
    gid = Attr(uuid.UUID, doc="Unique id of this object", required=True)

    declarative_attrs: ClassVar[tuple[str, ...]] = ("gid",)

    def __init_subclass__(
        cls,
        *,
        name: str | None = None,
        aliases: Sequence[str] = (),
        register: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init_subclass__(**kwargs)
        names: list[str] = []
        for klass in reversed(cls.__mro__):
            for key, value in vars(klass).items():
                if isinstance(value, Attr) and key not in names:
                    names.append(key)
        cls.declarative_attrs = tuple(names)
        cls.registered_name = name or registry.default_name(cls)
        if register:
            registry.datatypes.register(cls.registered_name, cls)
            for alias in aliases:
                registry.datatypes.register(alias, cls)

    registered_name: ClassVar[str] = "bsb_store.h5.traits.HasTraits"

    def __init__(self, **kwargs: Any) -> None:
        for key in kwargs:
            if key not in self.declarative_attrs:
                raise InvalidInputError(
                    f"{type(self).__name__} has no field {key!r}: expected one of "
                    f"{list(self.declarative_attrs)}.",
                    field=key,
                )
        self.gid = kwargs.pop("gid", None) or uuid.uuid4()
        for key in self.declarative_attrs:
            if key in kwargs:
                setattr(self, key, kwargs[key])
            elif key != "gid":
                default = self.trait(key).default
                if isinstance(default, (np.ndarray, list, dict, set)):
                    default = default.copy()
                self.__dict__[key] = default

    @classmethod
    def trait(cls, name: str) -> Attr:
        """The declared field ``name``."""
        for klass in cls.__mro__:
            value = vars(klass).get(name)
            if isinstance(value, Attr):
                return value
        raise InvalidInputError(f"{cls.__name__} declares no field {name!r}.", field=name)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} gid={self.gid}>"


registry.datatypes.register(HasTraits.registered_name, HasTraits)


class EnumAttr(Attr):
    """An :class:`Attr` whose values are members of an :class:`enum.Enum` class."""

    def __init__(
        self, enum_class: type[enum.Enum], default: Any = None, **kw: Any
    ) -> None:
        super().__init__(enum_class, default=default, **kw)
