"""The on-disk schema of a bsb-store root file (format version 1).

::

    /                         @bsb_store_format="bsb-store" @format_version=1
                              @written_by @bsb_store_version @created_at @storage_id
      store/                  @provenance (JSON, written once by create)
        state        int64 (1,)   state id: +1 per published transaction
        chunk_size   float64 (3,) NaN until a chunk with a size is stored
        shards/name  str (S,)     writers whose shards were merged ...
        shards/applied int64 (S,) ... and how many of their log rows
        shards/registered str (R,) writers whose shards may hold unmerged data
                                  (absent in roots no writer registered in)
        staging/                  only while a transaction is in flight
      placement/<set>/            a chunked set (see resources/base.py), per-chunk
        chunks/<chunk id>/{position,rotation,morphology,additional:<key>}
        labels/{keys,counts,values} label-set id of each cell, one flat column
                                  (resources/labels.py)
        morphology_names str (M,) the set's morphology names (indices point here)
        @labelsets JSON           label set id -> sorted labels
      connectivity/<tag>/         @pre @post @tag; blocks <dir>/<local id>/<global id>
      morphologies/, files/       see their resource modules

Sidecars next to ``<root>``: ``<root>.lock`` (inter-process lock and generation),
``<root>.shards/`` (the shard files of live or crashed writers) and, only while a
write session is open or after its writer died, ``<root>.undo`` (its undo log, see
``writes/undo.py``).
"""

from __future__ import annotations

import json
import os
import uuid
from datetime import datetime, timezone
from typing import Any

import h5py
import numpy as np

from .. import __version__
from ..exceptions import FormatVersionError, NotAStoreError

FORMAT_NAME = "bsb-store"
FORMAT_VERSION = 1
WRITTEN_BY = "bsb_store.core.engine.HDF5Engine"
GROUPS = ("placement", "connectivity", "morphologies", "files")


def lock_path(root: str) -> str:
    return root + ".lock"


def shard_dir(root: str) -> str:
    return root + ".shards"


def sidecars(root: str) -> list[str]:
    return [lock_path(root), shard_dir(root)]


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def initialise(f: h5py.File, provenance: dict[str, Any]) -> None:
    """Write the skeleton of an empty store into a freshly truncated file."""
    storage_id = provenance.get("storage_id") or str(uuid.uuid4())
    f.attrs["bsb_store_format"] = FORMAT_NAME
    f.attrs["format_version"] = FORMAT_VERSION
    f.attrs["written_by"] = WRITTEN_BY
    f.attrs["bsb_store_version"] = __version__
    f.attrs["created_at"] = provenance.get("created_at") or now_iso()
    f.attrs["storage_id"] = storage_id
    store = f.create_group("store")
    store.attrs["provenance"] = json.dumps(
        {**provenance, "storage_id": storage_id}, default=str
    )
    store.create_dataset("state", data=np.zeros(1, np.int64))
    store.create_dataset("chunk_size", data=np.full(3, np.nan))
    shards = store.create_group("shards")
    shards.create_dataset("name", (0,), dtype=h5py.string_dtype(), maxshape=(None,))
    shards.create_dataset("applied", (0,), dtype=np.int64, maxshape=(None,))
    for name in GROUPS:
        f.create_group(name)


def validate(f: h5py.File, path: str) -> None:
    """Raise unless ``f`` is a bsb-store root this version can read."""
    if f.attrs.get("bsb_store_format") != FORMAT_NAME:
        raise NotAStoreError(
            f"'{path}' is an HDF5 file but not a bsb-store root (no "
            f"bsb_store_format='{FORMAT_NAME}' attribute).",
            path=path,
        )
    version = int(f.attrs.get("format_version", 0))
    if version > FORMAT_VERSION:
        raise FormatVersionError(
            f"'{path}' uses bsb-store format version {version}; this bsb-store "
            f"{__version__} reads up to version {FORMAT_VERSION}. Upgrade bsb-store.",
            path=path,
            version=version,
        )
    missing = [g for g in ("store", *GROUPS) if g not in f]
    if missing:
        raise NotAStoreError(
            f"'{path}' is a damaged bsb-store root: missing groups {missing}.",
            path=path,
        )


def is_hdf5(path: str) -> bool:
    try:
        return os.path.isfile(path) and h5py.is_hdf5(path)
    except OSError:
        return False
