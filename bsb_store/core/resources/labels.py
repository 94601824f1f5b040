"""Label sets: per-cell label-set ids plus a table ``id -> set of labels``.

The semantics are BSB's ``EncodedLabels`` exactly, because ids and their order are
observable (``get_unique_labels`` returns sets in id order): id 0 is the empty set; when
labels are added to or removed from cells, each distinct source id transitions to the
id of the resulting set, which is an existing id when that set is known and otherwise
the lowest unused id, allocated in the order cells are visited (global cell order). One
table serves the whole placement set.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable

import numpy as np


class LabelSets:
    """The ``id -> frozenset(labels)`` table of one placement set."""

    def __init__(self, sets: dict[int, frozenset[str]] | None = None):
        self.sets: dict[int, frozenset[str]] = dict(sets or {0: frozenset()})

    @classmethod
    def decode(cls, raw: str | bytes | None) -> LabelSets:
        if raw is None:
            return cls()
        data = json.loads(raw)
        return cls({int(k): frozenset(v) for k, v in data.items()})

    def encode(self) -> str:
        return json.dumps({str(k): sorted(v) for k, v in sorted(self.sets.items())})

    def labels_of(self, id: int) -> frozenset[str]:
        return self.sets.get(id, frozenset())

    def mask(self, values: np.ndarray, labels: Iterable[str] | None) -> np.ndarray:
        """Cells whose set contains any of ``labels`` or equals them (``[]``: the
        unlabelled cells); ``None`` selects every cell."""
        if labels is None:
            return np.ones(len(values), dtype=bool)
        wanted = frozenset(labels)
        ids = [k for k, v in self.sets.items() if (v & wanted) or v == wanted]
        return np.isin(values, ids)

    def _find_or_add(self, labels: frozenset[str], counter) -> int:
        for k, v in self.sets.items():
            if v == labels:
                return k
        new = next(counter)
        self.sets[new] = labels
        return new

    def apply(
        self, values: np.ndarray, targets: np.ndarray, labels: list[str], add: bool
    ) -> np.ndarray:
        """New per-cell values after adding/removing ``labels`` on cells ``targets``
        (indices into ``values``, visited in ascending order)."""
        out = np.array(values, dtype=np.int64, copy=True)
        change = frozenset(labels)
        counter = (c for c in itertools.count() if c not in self.sets)
        transitions: dict[int, int] = {}
        for i in np.asarray(targets, dtype=np.int64):
            src = int(out[i])
            dst = transitions.get(src)
            if dst is None:
                current = self.labels_of(src)
                result = current | change if add else current - change
                dst = src if result == current else self._find_or_add(result, counter)
                transitions[src] = dst
            out[i] = dst
        return out
