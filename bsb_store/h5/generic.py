"""Generic attributes: the bookkeeping fields every TVB file may carry.

These mirror TVB's ``GenericAttributes`` (``invalid``, ``is_nan``, ``subject``, ``state``,
``user_tag_1`` … ``user_tag_5``, ``operation_tag``, ``parent_burst``, ``visible``,
``create_date``) so files keep them across a round trip. They are stored as root
attributes of the format by :meth:`H5File.store_generic_attributes
<bsb_store.h5.H5File.store_generic_attributes>`.
"""

from __future__ import annotations

import datetime as _dt
import uuid
from dataclasses import dataclass

#: Stored generic fields and their types (``create_date`` is handled separately).
GENERIC_FIELDS: dict[str, type] = {
    "invalid": bool,
    "is_nan": bool,
    "subject": str,
    "state": str,
    "user_tag_1": str,
    "user_tag_2": str,
    "user_tag_3": str,
    "user_tag_4": str,
    "user_tag_5": str,
    "operation_tag": str,
    "parent_burst": uuid.UUID,
    "visible": bool,
}


@dataclass
class GenericAttributes:
    """Bookkeeping metadata of a stored object; strings are ``""`` when unset."""

    invalid: bool = False
    is_nan: bool = False
    subject: str = ""
    state: str = ""
    user_tag_1: str = ""
    user_tag_2: str = ""
    user_tag_3: str = ""
    user_tag_4: str = ""
    user_tag_5: str = ""
    operation_tag: str = ""
    parent_burst: uuid.UUID | None = None
    visible: bool = True
    create_date: _dt.datetime | None = None

    def fill_from(self, other: GenericAttributes) -> None:
        """Merge ``other`` in: booleans are copied, strings and ``parent_burst`` only
        when set in ``other`` (so an empty value never erases a stored one)."""
        self.invalid = other.invalid
        self.is_nan = other.is_nan
        self.visible = other.visible
        for name, ftype in GENERIC_FIELDS.items():
            if ftype is not bool:
                setattr(self, name, getattr(other, name) or getattr(self, name))
