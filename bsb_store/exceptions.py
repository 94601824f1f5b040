"""The one error tree of bsb-store.

Every error is an :class:`errr.DetailedException` (so it carries ``details``: the file,
object and value involved) and also subclasses the built-in exception a Python user would
catch for the same problem (``except FileNotFoundError`` keeps working). Messages name the
file, the object and the offending value, and what was expected instead.

The BSB plugin (:mod:`bsb_store.plugin`) maps these onto bsb-core's own exception types at
its boundary; nothing here imports bsb.
"""

from __future__ import annotations

import errno

import errr


class StoreError(errr.DetailedException):
    """Base class of every bsb-store error."""

    _detail_labels: list[str] = []


class StoreWarning(UserWarning):
    """Base class of every bsb-store warning."""


# --------------------------------------------------------------------- input validation
class InvalidInputError(StoreError, ValueError):
    """A value passed to the API cannot be stored (wrong shape, NaN, bad name, ...)."""


class ShapeError(InvalidInputError):
    """An array has a shape that does not fit its destination."""


class DtypeError(StoreError, TypeError):
    """An array has a dtype that cannot be stored losslessly in its destination."""


class ChunkError(InvalidInputError):
    """A chunk coordinate is out of the int16 range, or a chunk is malformed."""


class ChunkSizeError(InvalidInputError):
    """A chunk's size disagrees with the chunk size the store already uses."""


class LabellingError(StoreError, IndexError):
    """Cell ids or a mask given to a labelling call do not fit the placement set."""


class LocationOutOfBoundsError(StoreError, IndexError):
    """Connection locations refer to cells outside the placement set view."""


class TypeMismatchError(InvalidInputError):
    """A set exists with other cell types than the ones asked for."""


# ------------------------------------------------------------------- files and formats
class StoreNotFoundError(StoreError, FileNotFoundError):
    """A root or file that must exist does not."""


class StoreExistsError(StoreError, FileExistsError):
    """A root, file or id that must not exist does."""


class NotAStoreError(StoreError, OSError):
    """A path exists but is not a bsb-store root (foreign, truncated or not HDF5)."""


class FormatError(StoreError, OSError):
    """A file does not follow the format declared for it."""


class FormatVersionError(FormatError):
    """A file was written by a newer format version than this package reads."""


class UnknownFormatError(FormatError):
    """A file's ``written_by`` names no registered format class."""


class MissingDataError(StoreError, LookupError):
    """A dataset or attribute a format declares is absent from the file."""


class ReadOnlyError(StoreError, PermissionError):
    """A write was attempted through a read-only file, engine or scope."""


class StoreIOError(StoreError, OSError):
    """Writing a store file failed at the operating-system or HDF5 level (an I/O error,
    a full disk); the message names the file and the operation. The call changed
    nothing: its write session was rolled back."""


class DiskFullError(StoreIOError):
    """Not enough free space for a write or a merge (``errno`` is ``ENOSPC``); the
    message says how much is needed and on which file system. Raised before the write
    when the free space can be checked, so nothing is changed and nothing is lost."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.errno = errno.ENOSPC
        self.strerror = "No space left on device"


# ------------------------------------------------------------------------ resources
class DatasetNotFoundError(StoreError, LookupError):
    """A placement or connectivity set, or data inside it, does not exist."""


class DatasetExistsError(StoreError, FileExistsError):
    """A placement or connectivity set that is being created already exists."""


class MorphologyNotFoundError(StoreError, LookupError):
    """A morphology name is not in the repository."""


class MorphologyExistsError(StoreError, FileExistsError):
    """A morphology is saved under a name that is taken, without ``overwrite``."""


class MissingActiveConfigError(StoreError, LookupError):
    """The file store holds no active configuration."""


# ------------------------------------------------------------- concurrency and safety
class LockTimeoutError(StoreError, TimeoutError):
    """A lock on a store could not be acquired within its timeout."""


class LockingError(StoreError, OSError):
    """The file system refuses the inter-process locks a store needs (``flock`` fails
    with ENOLCK or ENOSYS), or a store's lock file can be neither opened nor created."""


class ShardLostError(StoreError, OSError):
    """This process's shard file, or the store's root, was removed or replaced behind
    its back (another process moved or removed the store, or deleted its sidecars):
    an append cannot be stored where the store will find it, so it raises."""


class ShardChecksumError(FormatError):
    """A committed shard record does not match its checksum (torn or zeroed data): it
    is never merged; the shard is kept for inspection and ``bsb-store check``."""


class RecoveryNeededError(StoreError, OSError):
    """A store holds an interrupted transaction and is opened where it cannot repair it."""


class CollectiveError(StoreError, RuntimeError):
    """A collective operation failed on the rank that ran it; raised on every rank."""


class MissingShardsWarning(StoreWarning):
    """The root names writers whose shards may hold data it lacks, and their shards
    are not next to it (the file was copied or moved without its sidecars)."""


class PendingDataWarning(StoreWarning):
    """Committed data of a writer could not be merged into the store (e.g. its set was
    removed meanwhile) and was dropped."""


__all__ = [
    "ChunkError",
    "ChunkSizeError",
    "CollectiveError",
    "DatasetExistsError",
    "DatasetNotFoundError",
    "DiskFullError",
    "DtypeError",
    "FormatError",
    "FormatVersionError",
    "InvalidInputError",
    "LabellingError",
    "LocationOutOfBoundsError",
    "LockTimeoutError",
    "LockingError",
    "MissingActiveConfigError",
    "MissingDataError",
    "MissingShardsWarning",
    "MorphologyExistsError",
    "MorphologyNotFoundError",
    "NotAStoreError",
    "PendingDataWarning",
    "ReadOnlyError",
    "RecoveryNeededError",
    "ShapeError",
    "ShardChecksumError",
    "ShardLostError",
    "StoreError",
    "StoreExistsError",
    "StoreIOError",
    "StoreNotFoundError",
    "StoreWarning",
    "TypeMismatchError",
    "UnknownFormatError",
]
