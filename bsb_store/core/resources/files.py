"""FileStore: whole files (text or bytes) with JSON metadata, plus the active config.

On disk, each file is one dataset ``/files/<id>``:

* the content as a 1-D ``uint8`` dataset holding exactly the stored bytes (any length,
  zero included; NUL bytes, trailing ones too, are kept);
* ``@encoding``: the text encoding the bytes are in (absent for binary content);
* ``@mtime``: float seconds since the epoch at which the file was stored;
* ``@meta``: the metadata as a JSON object, ``mtime`` and ``content_sha256`` included.
  Numpy arrays in the metadata are written with :func:`meta_to_json` so they read back
  as arrays (:func:`meta_from_json`).

A store is one transaction: the new dataset is built under the staging group and moved
into place on publish, so a crash leaves either the old file or the new one. Bad input
(content that is neither text nor bytes, an unknown encoding, metadata JSON cannot hold,
a bad id) raises before anything is staged and leaves the store as it was.

Compared with bsb-hdf5's file store: ``has()`` looks at the right path, missing ids raise
:class:`FileNotFoundError` (:class:`~bsb_store.exceptions.StoreNotFoundError`), duplicates
raise :class:`FileExistsError` (:class:`~bsb_store.exceptions.StoreExistsError`), trailing
NUL bytes survive, ``load`` returns ``bytes``/``str`` (never ``np.bytes_``), and storing
the active configuration replaces the previous one in the same transaction.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import time
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import h5py
import numpy as np

from ...exceptions import (
    FormatError,
    InvalidInputError,
    MissingActiveConfigError,
    StoreExistsError,
    StoreNotFoundError,
)
from ..writes.txn import Transaction
from . import meta as jsonmeta
from .base import Resource
from .validate import name_problem

if TYPE_CHECKING:
    from ..engine import HDF5Engine

GROUP = "files"
#: Metadata key marking the active configuration.
ACTIVE_CONFIG = "active_config"
_NDARRAY = "__ndarray__"
_ARRAY_KINDS = "biufU"


# --------------------------------------------------------------------- metadata codec
def meta_to_json(meta: Mapping[str, Any] | None) -> str:
    """Encode file metadata (numpy arrays round-trip; numpy scalars come back as Python
    scalars). :raises InvalidInputError: for values JSON cannot hold exactly."""
    return jsonmeta.encode(meta, "File metadata", numpy_scalars=False)


def _jsonable_meta(meta: Any) -> dict[str, Any]:
    """``meta`` validated and turned into plain JSON types (arrays in their tagged
    form), so that store-managed keys can be added before it is written."""
    return json.loads(meta_to_json(meta))


def meta_from_json(text: str | bytes) -> dict[str, Any]:
    """Decode what :func:`meta_to_json` wrote. :raises FormatError: if it is not a JSON
    object."""
    return jsonmeta.decode(text, "File metadata")


# ------------------------------------------------------------------- input parsing
def parse_file_id(id: Any) -> str:
    """A file id: a non-empty str without ``/`` or NUL that is valid UTF-8."""
    problem = name_problem(id)
    if problem is None and not _utf8(id):
        problem = "it cannot be encoded as UTF-8"
    if problem is not None:
        raise InvalidInputError(f"Invalid file id {id!r}: {problem}.", id=id)
    return id


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _parse_encoding(encoding: Any) -> str:
    """``encoding`` if it names a text encoding Python knows, else a clear error.

    The codec is looked up explicitly: Python encodes ``""`` and decodes ``b""``
    without a lookup, so an unknown name would otherwise be recorded for empty content.

    :raises InvalidInputError: not a non-empty str, an unknown codec, or a codec that
        is not a text encoding (``"base64"``, ``"rot13"``, ...).
    """
    if not isinstance(encoding, str) or not encoding:
        raise InvalidInputError(
            f"Invalid encoding {encoding!r}: expected the name of a text encoding such "
            "as 'utf-8'.",
            encoding=encoding,
        )
    try:
        info = codecs.lookup(encoding)
    except (LookupError, ValueError, UnicodeError) as e:
        raise _bad_encoding(encoding, e) from None
    if not getattr(info, "_is_text_encoding", True):
        raise InvalidInputError(
            f"Encoding {encoding!r} is not a text encoding (codec {info.name!r} does "
            "not turn bytes into str); expected one such as 'utf-8'.",
            encoding=encoding,
        )
    return encoding


def encode_content(content: Any, encoding: str | None) -> tuple[bytes, str | None]:
    """The bytes to store and the encoding to record for ``content``.

    ``str`` is encoded with ``encoding`` (``"utf-8"`` when None), which is recorded.
    ``bytes`` (or ``bytearray``/``memoryview``) are kept as they are; their encoding is
    None unless one is given, in which case the bytes must decode with it.

    :raises InvalidInputError: for other content types, unknown encodings, or text that
        the encoding cannot represent.
    """
    if isinstance(content, str):
        encoding = "utf-8" if encoding is None else _parse_encoding(encoding)
        try:
            return content.encode(encoding), encoding
        except LookupError as e:
            raise _bad_encoding(encoding, e) from e
        except UnicodeError as e:
            raise InvalidInputError(
                f"Cannot encode the file content with {encoding!r}: {e}.",
                encoding=encoding,
            ) from e
    if isinstance(content, (bytes, bytearray, memoryview)):
        data = bytes(content)
        if encoding is None:
            return data, None
        encoding = _parse_encoding(encoding)
        try:
            data.decode(encoding)
        except LookupError as e:
            raise _bad_encoding(encoding, e) from e
        except UnicodeError as e:
            raise InvalidInputError(
                f"The bytes given do not decode with encoding {encoding!r} ({e}); pass "
                "encoding=None to store them as binary.",
                encoding=encoding,
            ) from e
        return data, encoding
    raise InvalidInputError(
        f"File content must be str or bytes, got {type(content).__name__}.",
        type=type(content).__name__,
    )


def _bad_encoding(encoding: str, e: Exception) -> InvalidInputError:
    return InvalidInputError(
        f"Unknown text encoding {encoding!r} ({e}).", encoding=encoding
    )


# ------------------------------------------------------------------------- resource
class FileStore(Resource):
    """The files of a store: ``store``/``load``/``remove`` whole files by id.

    Built as ``FileStore(engine)``; the engine exposes one as ``engine.files``. Two file
    stores are equal when they belong to engines on the same root.
    """

    def __init__(self, engine: HDF5Engine):
        super().__init__(engine, GROUP)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} of {self._engine.root!r}>"

    # -------------------------------------------------------------------- writes
    def store(
        self,
        content: str | bytes,
        id: str | None = None,
        meta: Mapping[str, Any] | None = None,
        encoding: str | None = None,
        overwrite: bool = False,
    ) -> str:
        """Store ``content`` under ``id`` (a new uuid4 string when None).

        :param content: ``str`` (encoded with ``encoding``, default ``"utf-8"``, which is
            recorded) or ``bytes`` (stored as they are, encoding None unless given).
        :param meta: JSON-able metadata (numpy arrays allowed); ``mtime`` and
            ``content_sha256`` are added. The caller's mapping is not modified.
        :param overwrite: replace an existing file with the same id (atomically).
        :returns: the id.
        :raises StoreExistsError: (a :class:`FileExistsError`) when ``id`` is taken and
            ``overwrite`` is False.
        :raises InvalidInputError: for bad content, encoding, metadata or id.
        :raises ReadOnlyError: when the engine is read-only.
        """
        id = str(uuid.uuid4()) if id is None else parse_file_id(id)
        data, encoding = encode_content(content, encoding)
        user_meta = _jsonable_meta(meta)
        user_meta["content_sha256"] = hashlib.sha256(data).hexdigest()
        with self._engine._write() as txn:
            path = self._file_path(id)
            if not overwrite and path in txn.file:
                raise StoreExistsError(
                    f"A file with id '{id}' already exists in '{self._engine.root}'; "
                    "pass overwrite=True to replace it.",
                    id=id,
                    path=self._engine.root,
                )
            staged = _stage_file(txn, data, encoding, user_meta)
            txn.replace(staged, path)
        return id

    def remove(self, id: str) -> None:
        """Delete the file ``id``.

        :raises StoreNotFoundError: (a :class:`FileNotFoundError`) if there is none.
        """
        id = parse_file_id(id)
        with self._engine._write() as txn:
            path = self._file_path(id)
            if path not in txn.file:
                raise self._missing(id)
            txn.delete(path)

    def store_active_config(
        self, tree: Mapping[str, Any], meta: Mapping[str, Any] | None = None
    ) -> str:
        """Store ``json.dumps(tree)`` as the one active configuration. Collective.

        The new file gets meta ``{"active_config": True, **meta}``; every previously
        active configuration is removed in the same transaction, so exactly one exists
        at any time, also after a crash.

        :returns: the new configuration's id (the same on every rank).
        """
        try:
            text = json.dumps(tree)
        except (TypeError, ValueError) as e:
            raise InvalidInputError(
                f"The configuration tree cannot be written as JSON: {e}."
            ) from e
        user_meta = {ACTIVE_CONFIG: True, **_jsonable_meta(meta)}
        user_meta[ACTIVE_CONFIG] = True
        data, encoding = encode_content(text, None)
        user_meta["content_sha256"] = hashlib.sha256(data).hexdigest()
        return self._engine._collective_mutation(
            self._store_active_config, data, encoding, user_meta
        )

    def _store_active_config(
        self, data: bytes, encoding: str | None, user_meta: dict[str, Any]
    ) -> str:
        id = str(uuid.uuid4())
        with self._engine._write() as txn:
            old = _active_ids(txn.file[GROUP])
            staged = _stage_file(txn, data, encoding, user_meta)
            txn.replace(staged, self._file_path(id))
            for previous in old:
                txn.delete(self._file_path(previous))
        return id

    # --------------------------------------------------------------------- reads
    def load(self, id: str) -> tuple[str | bytes, dict[str, Any]]:
        """``(content, meta)`` of file ``id``: ``str`` if it has an encoding, else bytes.

        :raises StoreNotFoundError: (a :class:`FileNotFoundError`) if there is none.
        """
        id = parse_file_id(id)
        with self._engine._read() as f:
            return _read_file(self._dataset(f, id))

    def has(self, id: str) -> bool:
        """Whether the store holds a file with this id."""
        id = parse_file_id(id)
        with self._engine._read() as f:
            return isinstance(f.get(self._file_path(id)), h5py.Dataset)

    def all(self) -> dict[str, dict[str, Any]]:
        """``{id: meta}`` of every file."""
        with self._engine._read() as f:
            return {
                id: meta_from_json(ds.attrs.get("meta", "{}"))
                for id, ds in f[GROUP].items()
                if isinstance(ds, h5py.Dataset)
            }

    def get_mtime(self, id: str) -> float:
        """When file ``id`` was stored, in seconds since the epoch."""
        id = parse_file_id(id)
        with self._engine._read() as f:
            return float(self._dataset(f, id).attrs["mtime"])

    def get_encoding(self, id: str) -> str | None:
        """The encoding of file ``id``, or None for binary content."""
        id = parse_file_id(id)
        with self._engine._read() as f:
            return _encoding(self._dataset(f, id))

    def get_meta(self, id: str) -> dict[str, Any]:
        """The metadata of file ``id`` (``mtime`` and ``content_sha256`` included)."""
        id = parse_file_id(id)
        with self._engine._read() as f:
            return meta_from_json(self._dataset(f, id).attrs.get("meta", "{}"))

    def active_config_id(self) -> str | None:
        """The id of the active configuration, or None when there is none."""
        with self._engine._read() as f:
            return _newest(f[GROUP], _active_ids(f[GROUP]))

    def load_active_config(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """``(tree, meta)`` of the active configuration.

        :raises MissingActiveConfigError: when none is stored.
        """
        with self._engine._read() as f:
            id = _newest(f[GROUP], _active_ids(f[GROUP]))
            if id is None:
                raise MissingActiveConfigError(
                    f"No active configuration in '{self._engine.root}'.",
                    path=self._engine.root,
                )
            content, meta = _read_file(self._dataset(f, id))
        try:
            return json.loads(content), meta
        except ValueError as e:
            raise FormatError(
                f"The active configuration '{id}' in '{self._engine.root}' is not "
                f"valid JSON: {e}.",
                id=id,
            ) from e

    # ------------------------------------------------------------------- helpers
    def _file_path(self, id: str) -> str:
        return f"{GROUP}/{id}"

    def _missing(self, id: str) -> StoreNotFoundError:
        return StoreNotFoundError(
            f"No file with id '{id}' in '{self._engine.root}'.",
            id=id,
            path=self._engine.root,
        )

    def _dataset(self, f: h5py.File, id: str) -> h5py.Dataset:
        ds = f.get(self._file_path(id))
        if ds is None:
            raise self._missing(id)
        if not isinstance(ds, h5py.Dataset) or ds.dtype != np.uint8 or ds.ndim != 1:
            raise FormatError(
                f"'/{self._file_path(id)}' in '{self._engine.root}' is not a 1-D uint8 "
                "dataset.",
                id=id,
            )
        return ds


def _stage_file(
    txn: Transaction, data: bytes, encoding: str | None, user_meta: dict[str, Any]
) -> str:
    """Build the file's dataset under the staging group; its staged path."""
    mtime = time.time()
    meta = {**user_meta, "mtime": mtime}
    staged = txn.staging_path()
    ds = txn.file.create_dataset(staged, data=np.frombuffer(data, dtype=np.uint8))
    if encoding is not None:
        ds.attrs["encoding"] = encoding
    ds.attrs["mtime"] = np.float64(mtime)
    ds.attrs["meta"] = json.dumps(meta)
    return staged


def _encoding(ds: h5py.Dataset) -> str | None:
    raw = ds.attrs.get("encoding")
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8")
    return raw or None


def _read_file(ds: h5py.Dataset) -> tuple[str | bytes, dict[str, Any]]:
    raw = ds[()]
    encoding = _encoding(ds)
    content: str | bytes = str(raw.data, encoding) if encoding else raw.tobytes()
    return content, meta_from_json(ds.attrs.get("meta", "{}"))


def _active_ids(group: h5py.Group) -> list[str]:
    """Ids of the files marked as active configuration (cheap text test first)."""
    ids = []
    for id, ds in group.items():
        raw = ds.attrs.get("meta", "")
        if ACTIVE_CONFIG in raw and json.loads(raw).get(ACTIVE_CONFIG, False):
            ids.append(id)
    return ids


def _newest(group: h5py.Group, ids: list[str]) -> str | None:
    """The most recently stored of ``ids`` (ties broken by id), or None."""
    if not ids:
        return None
    return max(ids, key=lambda i: (float(group[i].attrs.get("mtime", 0.0)), i))
