"""Handle ownership for formats: modes, open/close, profile detection, version check.

:class:`FileBinding` is the base of :class:`~bsb_store.h5.H5File`. It binds a format
either to a file path (and then owns the h5py handle: opened once inside ``with``, or per
operation outside it) or to a caller-owned :class:`h5py.Group`. Every read goes through
:meth:`FileBinding._reading` and every write through :meth:`FileBinding._writing`, which
enforce the open mode: a read never creates a file, ``mode="r"`` never writes.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import h5py
import numpy as np

from .._types import Mode
from ..exceptions import (
    FormatError,
    FormatVersionError,
    InvalidInputError,
    NotAStoreError,
    ReadOnlyError,
    StoreExistsError,
    StoreNotFoundError,
)
from .encoding import Profile, decode_as, detect_profile, get_profile

B = TypeVar("B", bound="FileBinding")
MODES: tuple[str, ...] = ("r", "r+", "a", "w", "w-", "x")


def parse_mode(mode: Any) -> Mode:
    """``mode`` if it is one of h5py's modes, else :class:`InvalidInputError`."""
    if mode not in MODES:
        raise InvalidInputError(
            f"Invalid mode {mode!r}: expected one of {', '.join(map(repr, MODES))}.",
            value=mode,
        )
    return mode  # type: ignore[no-any-return]


class FileBinding:
    """Where a format lives (file path or h5py group) and how it is opened.

    See :class:`~bsb_store.h5.H5File` for the parameters.
    """

    #: Version of this class's on-disk schema; files with a higher one are refused.
    format_version: ClassVar[int] = 1
    #: Profile of new files when none is given.
    default_profile: ClassVar[str] = "native"
    #: Write ``written_by`` and the version header on first write.
    self_describing: ClassVar[bool] = True
    #: The ``written_by`` value of this class (its name in the format registry).
    registered_name: ClassVar[str] = "bsb_store.h5.file.H5File"
    KEY_WRITTEN_BY: ClassVar[str] = "written_by"

    def __init__(
        self,
        path: str | os.PathLike[str] | h5py.Group,
        mode: Mode | None = None,
        *,
        profile: str | Profile | None = None,
        locking: bool | None = None,
        libver: Any = None,
    ) -> None:
        self._group: h5py.Group | None = None
        if isinstance(path, h5py.Group):
            if not path.id.valid:
                raise InvalidInputError(
                    f"Cannot bind {type(self).__name__} to a closed group."
                )
            self._group = path
            self.path = Path(path.file.filename)
            mode = mode or ("r" if path.file.mode == "r" else "r+")
        elif isinstance(path, (str, os.PathLike)):
            self.path = Path(os.fspath(path))
        else:
            raise InvalidInputError(
                f"{type(self).__name__} expects a path or an h5py.Group: got "
                f"{type(path).__name__} {path!r}.",
                value=path,
            )
        self.mode: Mode = parse_mode(mode or "a")
        self._profile: Profile | None = get_profile(profile) if profile else None
        self._h5kw: dict[str, Any] = {}
        if locking is not None:
            self._h5kw["locking"] = locking
        if libver is not None:
            self._h5kw["libver"] = libver
        self._handle: h5py.File | None = None
        self._depth = 0
        self._context_opened = False
        if self._group is not None:
            if self._profile is None:
                self._profile = detect_profile(self._group.attrs) or get_profile(
                    self.default_profile
                )
            self._check_version(self._group)
        elif self.mode in ("w", "w-", "x"):
            self._create()

    # ---------------------------------------------------------------- identity
    @property
    def profile(self) -> Profile:
        """The profile in use: given, detected from the file, or the class default."""
        if self._profile is None:
            if self._can_read():
                with self._reading():
                    pass  # opening detects the profile
            if self._profile is None:
                self._profile = get_profile(self.default_profile)
        return self._profile

    @property
    def is_bound_to_group(self) -> bool:
        """Whether this format lives in a caller-owned h5py group."""
        return self._group is not None

    @property
    def group_name(self) -> str:
        """HDF5 path of the group holding the format (``"/"`` for a whole file)."""
        return self._group.name if self._group is not None else "/"

    def describe(self) -> str:
        """``'path'`` or ``'path' group '/name'``, for messages."""
        if self._group is not None and self._group.name != "/":
            return f"'{self.path}' group '{self._group.name}'"
        return f"'{self.path}'"

    @classmethod
    def file_name_base(cls) -> str:
        """The class name without ``"H5"`` (TVB names files ``<base>_<gid.hex>.h5``)."""
        return cls.__name__.replace("H5", "")

    def __repr__(self) -> str:
        where = self.describe() if self._group is not None else repr(str(self.path))
        return f"<{type(self).__name__}({where}, mode={self.mode!r})>"

    # ------------------------------------------------------------ life cycle
    def open(self: B) -> B:
        """Open the file for the rest of the lifetime, until :meth:`close`.

        Mode ``"a"`` creates a missing file here (with its headers). No-op when already
        open or bound to a group.
        """
        if self._group is None and self._handle is None:
            new = not self.path.exists()
            h5mode = {"w": "r+", "w-": "r+", "x": "r+"}.get(self.mode, self.mode)
            self._handle = self._open_handle(h5mode)
            if new and self.mode != "r":
                self._before_write(self._handle)
        return self

    def close(self) -> None:
        """Close the file handle if this object opened one (idempotent). A bound group's
        file belongs to the caller and stays open. The object remains usable."""
        self._depth = 0
        if self._handle is not None:
            handle, self._handle = self._handle, None
            handle.close()

    def flush(self) -> None:
        """Flush the open handle (or the bound group's file) to disk."""
        if self._group is not None:
            self._group.file.flush()
        elif self._handle is not None:
            self._handle.flush()

    @property
    def is_open(self) -> bool:
        """Whether a handle is held open (always true for a live bound group)."""
        return self._handle is not None or (
            self._group is not None and self._group.id.valid
        )

    def __enter__(self: B) -> B:
        if self._depth == 0:
            self._context_opened = self._handle is None
            self.open()
        self._depth += 1
        return self

    def __exit__(self, *exc: object) -> None:
        self._depth = max(0, self._depth - 1)
        if self._depth == 0 and self._context_opened:
            self.close()

    # ------------------------------------------------------------- handles
    def _can_read(self) -> bool:
        return self._group is not None or self._handle is not None or self.path.is_file()

    @contextmanager
    def _reading(self) -> Iterator[h5py.Group]:
        if self._group is not None:
            yield self._live_group()
        elif self._handle is not None:
            yield self._handle
        else:
            handle = self._open_handle("r")
            try:
                yield handle
            finally:
                handle.close()

    def _check_writable(self) -> None:
        if self.mode == "r" or (self._group is not None and self._group.file.mode == "r"):
            raise ReadOnlyError(
                f"Cannot write to {self.describe()}: {type(self).__name__} was opened "
                "read-only (mode 'r'). Open it with mode 'r+' or 'a' to write.",
                path=str(self.path),
            )

    @contextmanager
    def _writing(self, create: bool = True) -> Iterator[h5py.Group]:
        self._check_writable()
        if self._group is not None:
            yield self._live_group()
        elif self._handle is not None:
            yield self._handle
        else:
            handle = self._open_handle("a" if self.mode == "a" and create else "r+")
            try:
                yield handle
            finally:
                handle.close()

    def _live_group(self) -> h5py.Group:
        assert self._group is not None
        if not self._group.id.valid:
            raise StoreNotFoundError(
                f"The group bound to {type(self).__name__} ({self.path}) was closed by "
                "its owner.",
                path=str(self.path),
            )
        return self._group

    def _open_handle(self, h5mode: str) -> h5py.File:
        path = self.path
        if path.exists():
            if not path.is_file() or not h5py.is_hdf5(path):
                size = path.stat().st_size if path.is_file() else "a directory"
                raise NotAStoreError(
                    f"'{path}' is not an HDF5 file (no HDF5 signature; {size}"
                    f"{' bytes' if isinstance(size, int) else ''}); expected a file "
                    f"written by {type(self).__name__}.",
                    path=str(path),
                )
        elif h5mode in ("r", "r+"):
            raise StoreNotFoundError(
                f"No such file: '{path}' ({type(self).__name__} in mode {self.mode!r} "
                "reads existing files only; nothing was created).",
                path=str(path),
            )
        elif not path.parent.is_dir():
            raise StoreNotFoundError(
                f"Cannot create '{path}': the directory '{path.parent}' does not exist.",
                path=str(path),
            )
        try:
            handle = h5py.File(path, h5mode, **self._h5kw)
        except (BlockingIOError, PermissionError):
            raise
        except OSError as e:
            raise NotAStoreError(
                f"Cannot open '{path}' as HDF5 (mode {h5mode!r}): the file is truncated "
                f"or corrupt ({e}).",
                path=str(path),
            ) from e
        try:
            if self._profile is None:
                self._profile = detect_profile(handle.attrs) or get_profile(
                    self.default_profile
                )
            self._check_version(handle)
        except BaseException:
            handle.close()
            raise
        return handle

    def _create(self) -> None:
        if self.mode in ("w-", "x") and self.path.exists():
            raise StoreExistsError(
                f"Cannot create '{self.path}' with mode {self.mode!r}: it exists.",
                path=str(self.path),
            )
        if not self.path.parent.is_dir():
            raise StoreNotFoundError(
                f"Cannot create '{self.path}': no directory '{self.path.parent}'.",
                path=str(self.path),
            )
        if self._profile is None:
            self._profile = get_profile(self.default_profile)
        with h5py.File(self.path, "w" if self.mode == "w" else "w-", **self._h5kw) as f:
            self._before_write(f)

    def _supported_version(self) -> int:
        return self.profile.fixed_version or type(self).format_version

    def _check_version(self, group: h5py.Group) -> None:
        profile = self._profile or get_profile(self.default_profile)
        raw = group.attrs.get(profile.key(profile.version_key))
        if raw is None:
            return
        try:
            version = decode_as(raw, int)
        except TypeError as e:
            raise FormatError(
                f"{self.describe()} has a malformed {profile.key(profile.version_key)} "
                f"header {raw!r}: expected an integer.",
                path=str(self.path),
            ) from e
        supported = profile.fixed_version or type(self).format_version
        if version > supported:
            raise FormatVersionError(
                f"{self.describe()} has {profile.key(profile.version_key)} = {version}, "
                f"newer than the version {supported} that {type(self).__name__} reads; "
                "upgrade bsb-store to read it. The file was not modified.",
                path=str(self.path),
                value=version,
            )

    def _before_write(self, group: h5py.Group) -> None:
        """Write the self-describing headers into ``group`` if they are missing."""
        if not self.self_describing:
            return
        profile = self.profile
        key = profile.key(self.KEY_WRITTEN_BY)
        if key not in group.attrs:
            group.attrs[key] = type(self).registered_name
            group.attrs[profile.key(profile.version_key)] = np.int64(
                self._supported_version()
            )
