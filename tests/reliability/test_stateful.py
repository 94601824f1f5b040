"""Hypothesis state machines: random sequences of calls on a PlacementSet and on a
FileStore, checked after every step against an in-memory model.

``BSB_STORE_STATEFUL_EXAMPLES`` sets the number of sequences per machine (default 25,
each up to 25 steps).
"""

from __future__ import annotations

import os
import shutil
import tempfile

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from bsb_store.core import HDF5Engine, PlacementSet
from bsb_store.core.chunks import Chunk
from bsb_store.exceptions import (
    DatasetNotFoundError,
    MissingActiveConfigError,
    StoreExistsError,
    StoreNotFoundError,
)

pytestmark = pytest.mark.serial_only

EXAMPLES = int(os.environ.get("BSB_STORE_STATEFUL_EXAMPLES", "25"))
MACHINE_SETTINGS = settings(
    max_examples=EXAMPLES,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)

CHUNKS = [(0, 0, 0), (1, 0, 0), (0, 2, 0), (-1, 0, 0), (3, -2, 1)]
CHUNK_IDS = [Chunk(c).id for c in CHUNKS]
LABELS = ["x", "y", "z"]
MORPHS = ["A", "B", "C"]
FINITE = st.floats(-1e6, 1e6, allow_nan=False)


class PlacementModel(RuleBasedStateMachine):
    """A PlacementSet next to a list of cells per chunk. A cell is a dict with its
    position, rotation, morphology name, additional value ``w`` and labels."""

    @initialize()
    def start(self):
        self.dir = tempfile.mkdtemp(prefix="bsb-store-stateful-")
        self.root = os.path.join(self.dir, "store.h5")
        self.engine = HDF5Engine(self.root)
        self.engine.create()
        self.ps = PlacementSet.create(self.engine, "cells")
        self.cells: dict[int, list[dict]] = {}
        self.columns: set[str] = set()  # registered once given, never dropped
        self.chunk_filter: list[int] | None = None
        self.label_filter: list[str] | None = None

    def teardown(self):
        if hasattr(self, "engine"):
            self.engine.remove()
            shutil.rmtree(self.dir, ignore_errors=True)

    # ------------------------------------------------------------------ model
    def order(self) -> list[dict]:
        return [c for cid in sorted(self.cells) for c in self.cells[cid]]

    def chunk_view(self) -> list[int]:
        """Global ids of the cells the chunk filter lets through."""
        out, g = [], 0
        for cid in sorted(self.cells):
            n = len(self.cells[cid])
            if self.chunk_filter is None or cid in self.chunk_filter:
                out.extend(range(g, g + n))
            g += n
        return out

    def has(self, cell: dict, labels: list[str]) -> bool:
        wanted = set(labels)
        return bool(cell["labels"] & wanted) or cell["labels"] == wanted

    def view(self) -> list[int]:
        """Global ids of the cells in view (chunk filter, then label filter)."""
        order = self.order()
        ids = self.chunk_view()
        if self.label_filter is None:
            return ids
        return [g for g in ids if self.has(order[g], self.label_filter)]

    # ------------------------------------------------------------------ rules
    @rule(
        chunk=st.sampled_from(range(len(CHUNKS))),
        positions=hnp.arrays(
            np.float64, st.tuples(st.integers(0, 5), st.just(3)), elements=FINITE
        ),
        data=st.data(),
    )
    def append(self, chunk, positions, data):
        n = len(positions)
        rot = data.draw(
            st.one_of(st.none(), hnp.arrays(np.float64, (n, 3), elements=FINITE))
        )
        morph = data.draw(
            st.one_of(
                st.none(),
                st.tuples(
                    st.lists(st.integers(-1, 2), min_size=n, max_size=n),
                    st.permutations(MORPHS),
                ),
            )
        )
        w = data.draw(st.one_of(st.none(), hnp.arrays(np.float64, n, elements=FINITE)))
        self.ps.append_data(
            CHUNKS[chunk],
            positions,
            rotations=rot,
            morphologies=morph,
            additional=None if w is None else {"w": w},
        )
        cells = self.cells.setdefault(CHUNK_IDS[chunk], [])
        for i in range(n):
            name = None if morph is None or morph[0][i] < 0 else morph[1][morph[0][i]]
            cells.append(
                {
                    "pos": positions[i],
                    "rot": np.zeros(3) if rot is None else rot[i],
                    "morph": name,
                    "w": np.nan if w is None else w[i],
                    "labels": frozenset(),
                }
            )
        if n:
            self.columns |= {"pos"} | {
                k for k, v in (("rot", rot), ("morph", morph), ("w", w)) if v is not None
            }
        elif w is not None:
            self.columns.add("w")  # an additional key given with no rows exists

    @rule(chunk=st.sampled_from(range(len(CHUNKS))), n=st.integers(0, 4))
    def append_entities(self, chunk, n):
        self.ps.append_entities(CHUNKS[chunk], n)
        cells = self.cells.setdefault(CHUNK_IDS[chunk], [])
        for _ in range(n):
            cells.append(
                {
                    "pos": np.full(3, np.nan),
                    "rot": np.zeros(3),
                    "morph": None,
                    "w": np.nan,
                    "labels": frozenset(),
                }
            )

    @precondition(lambda self: self.view())
    @rule(
        labels=st.lists(st.sampled_from(LABELS), min_size=1, max_size=2, unique=True),
        add=st.booleans(),
        by_mask=st.booleans(),
        data=st.data(),
    )
    def label(self, labels, add, by_mask, data):
        view = self.view()
        picks = data.draw(
            st.lists(st.integers(0, len(view) - 1), max_size=6, unique=True)
        )
        if by_mask:
            mask = np.zeros(len(view), bool)
            mask[picks] = True
            (self.ps.label_by_mask if add else self.ps.remove_labels_by_mask)(
                labels, mask
            )
        else:
            (self.ps.label if add else self.ps.remove_labels)(labels, sorted(picks))
        order = self.order()
        for p in picks:
            cell = order[view[p]]
            change = frozenset(labels)
            cell["labels"] = cell["labels"] | change if add else cell["labels"] - change

    @rule(chunks=st.one_of(st.none(), st.lists(st.sampled_from(range(len(CHUNKS))))))
    def clear(self, chunks):
        self.ps.clear(None if chunks is None else [CHUNKS[c] for c in chunks])
        for c in range(len(CHUNKS)) if chunks is None else chunks:
            self.cells.pop(CHUNK_IDS[c], None)

    @rule(chunks=st.one_of(st.none(), st.lists(st.sampled_from(range(len(CHUNKS))))))
    def chunk_filter_(self, chunks):
        self.ps.set_chunk_filter(None if chunks is None else [CHUNKS[c] for c in chunks])
        ids = None if not chunks else sorted({CHUNK_IDS[c] for c in chunks})
        self.chunk_filter = ids

    @rule(labels=st.one_of(st.none(), st.lists(st.sampled_from(LABELS), max_size=2)))
    def label_filter_(self, labels):
        self.ps.set_label_filter(labels)
        self.label_filter = labels

    @rule()
    def reopen(self):
        """A new engine (as after a restart) sees the same data; filters are per object."""
        self.engine.close()
        self.engine = HDF5Engine(self.root)
        self.ps = PlacementSet(self.engine, "cells")
        self.chunk_filter = self.label_filter = None

    # ------------------------------------------------------------- invariants
    @invariant()
    def same_as_model(self):
        if not hasattr(self, "ps"):
            return
        order, view = self.order(), self.view()
        cells = [order[g] for g in view]
        ps = self.ps
        assert len(ps) == len(view)
        assert ps.load_ids().tolist() == view
        stats = {int(k): v for k, v in ps.get_chunk_stats().items()}
        assert stats == {cid: len(c) for cid, c in self.cells.items()}
        chunk_cells = [order[g] for g in self.chunk_view()]
        # A missing column raises when the chunk filter lets cells through (even if
        # the label filter then keeps none of them).
        self.column(ps.load_positions, "pos", cells, chunk_cells, (3,))
        self.column(ps.load_rotations, "rot", cells, chunk_cells, (3,))
        assert ps.has_column("additional:w") == ("w" in self.columns)
        if "w" in self.columns:
            want = np.asarray([c["w"] for c in cells], float)
            assert np.array_equal(ps.load_additional("w"), want, equal_nan=True)
        if "morph" in self.columns:
            idx, names = ps.load_morphology_indices()
            got = [None if i < 0 else names[i] for i in idx.tolist()]
            assert got == [c["morph"] for c in cells]
        elif chunk_cells:
            with pytest.raises(DatasetNotFoundError):
                ps.load_morphology_indices()
        for lab in LABELS:
            want = [lab in c["labels"] for c in chunk_cells]
            assert ps.get_label_mask([lab]).tolist() == want
            labelled = [g for g in self.chunk_view() if lab in order[g]["labels"]]
            assert ps.get_labelled([lab]).tolist() == labelled
        unique = {frozenset(s) for s in ps.get_unique_labels()}
        assert unique == {c["labels"] for c in chunk_cells}

    def column(self, load, key, cells, chunk_cells, shape):
        if key in self.columns:
            want = np.asarray([c[key] for c in cells], float).reshape(-1, *shape)
            assert np.array_equal(load(), want, equal_nan=True), key
        elif chunk_cells:
            with pytest.raises(DatasetNotFoundError):
                load()
        else:
            assert len(load()) == 0


TestPlacementModel = PlacementModel.TestCase
TestPlacementModel.settings = MACHINE_SETTINGS


# ----------------------------------------------------------------- FileStore
IDS = st.sampled_from(["a", "b", "ç d", "日本", "x" * 50])
CONTENTS = st.one_of(st.text(max_size=40), st.binary(max_size=40))


class FileStoreModel(RuleBasedStateMachine):
    """A FileStore next to a dict ``id -> (content, meta)`` and the active config."""

    @initialize()
    def start(self):
        self.dir = tempfile.mkdtemp(prefix="bsb-store-stateful-")
        self.root = os.path.join(self.dir, "store.h5")
        self.engine = HDF5Engine(self.root)
        self.engine.create()
        self.files: dict[str, tuple[object, dict]] = {}
        self.active: tuple[str, dict] | None = None

    def teardown(self):
        if hasattr(self, "engine"):
            self.engine.remove()
            shutil.rmtree(self.dir, ignore_errors=True)

    @rule(
        id=IDS,
        content=CONTENTS,
        meta=st.dictionaries(
            st.text(max_size=3), st.integers() | st.text(max_size=3), max_size=2
        ),
        overwrite=st.booleans(),
    )
    def store(self, id, content, meta, overwrite):
        meta = {k: v for k, v in meta.items() if k not in ("mtime", "content_sha256")}
        if id in self.files and not overwrite:
            with pytest.raises(StoreExistsError):
                self.engine.files.store(content, id=id, meta=meta)
            return
        assert self.engine.files.store(content, id, meta, overwrite=overwrite) == id
        self.files[id] = (content, meta)

    @rule(content=CONTENTS)
    def store_new(self, content):
        fid = self.engine.files.store(content)
        assert fid not in self.files and len(fid) == 36
        self.files[fid] = (content, {})

    @rule(id=IDS)
    def remove(self, id):
        if id not in self.files:
            with pytest.raises(StoreNotFoundError):
                self.engine.files.remove(id)
            return
        self.engine.files.remove(id)
        del self.files[id]

    @rule(tree=st.dictionaries(st.text(max_size=3), st.integers(), max_size=3))
    def active_config(self, tree):
        fid = self.engine.files.store_active_config(tree)
        self.active = (fid, tree)

    @rule()
    def reopen(self):
        self.engine.close()
        self.engine = HDF5Engine(self.root)

    @invariant()
    def same_as_model(self):
        if not hasattr(self, "engine"):
            return
        fs = self.engine.files
        expected = set(self.files) | ({self.active[0]} if self.active else set())
        assert set(fs.all()) == expected
        for fid, (content, meta) in self.files.items():
            got, got_meta = fs.load(fid)
            assert got == content and type(got) is type(content)
            assert {k: got_meta[k] for k in meta} == meta
            assert fs.has(fid)
            assert fs.get_encoding(fid) == ("utf-8" if isinstance(content, str) else None)
        if self.active is None:
            assert fs.active_config_id() is None
            with pytest.raises(MissingActiveConfigError):
                fs.load_active_config()
        else:
            assert fs.active_config_id() == self.active[0]
            assert fs.load_active_config()[0] == self.active[1]


TestFileStoreModel = FileStoreModel.TestCase
TestFileStoreModel.settings = MACHINE_SETTINGS
