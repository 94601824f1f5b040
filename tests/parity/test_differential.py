"""bsb-store against bsb-hdf5, call by call: hypothesis draws sequences of operations
through bsb-core's public API, the :class:`~tests.parity.harness.Twin` makes every call
on both engines, and every read must come back identical (order included) and every
error with the same bsb type.

``BSB_STORE_PARITY_EXAMPLES`` sets the number of sequences (default 100, each up to 30
steps); ``BSB_STORE_PARITY_PROFILE=long`` runs 400 sequences of up to 50 steps.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    precondition,
    rule,
)

bsb = pytest.importorskip("bsb")
pytest.importorskip("bsb_hdf5")

from bsb import Branch, Chunk, MorphologySet  # noqa: E402
from bsb.morphologies import Morphology  # noqa: E402

from .divergences import KNOWN  # noqa: E402
from .harness import PLACEMENT_READS, Twin, chunk_as, pin_combinations  # noqa: E402

LONG = os.environ.get("BSB_STORE_PARITY_PROFILE") == "long"

# The long profile runs for tens of minutes: no per-test timeout then.
pytestmark = [
    pytest.mark.serial_only,
    pytest.mark.parity,
    pytest.mark.timeout(0 if LONG else 600),
]
EXAMPLES = int(os.environ.get("BSB_STORE_PARITY_EXAMPLES", "400" if LONG else "100"))
PARITY_SETTINGS = settings(
    max_examples=EXAMPLES,
    stateful_step_count=50 if LONG else 30,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    # CI (CI=true) replays the same sequences on every run: a red CI then means a
    # change broke parity, not that exploration met a new bsb-hdf5 bug. Local runs
    # explore new sequences each time (and the long profile many more).
    derandomize=os.environ.get("CI") == "true" and not LONG,
    # BSB_STORE_PARITY_SHRINK=0: report the first difference found without shrinking
    # it (each step costs two engines' calls; shrinking can take minutes).
    phases=list(Phase)
    if os.environ.get("BSB_STORE_PARITY_SHRINK", "1") != "0"
    else [Phase.explicit, Phase.reuse, Phase.generate],
)

CHUNKS = [(0, 0, 0), (1, 0, 0), (0, 1, 0), (-1, 0, 0), (0, 0, 1)]
FORMS = ["tuple", "list", "array", "sized", "bare"]
TYPES = ["a", "b"]
LABELS = ["p", "q", "r"]
MORPHS = ["M0", "M1", "M2"]
TAGS = ["a_to_b", "a_to_a", "b_to_a"]

coords = st.sampled_from(CHUNKS)
forms = st.sampled_from(FORMS)
types = st.sampled_from(TYPES)
label_lists = st.lists(st.sampled_from(LABELS), min_size=1, max_size=3, unique=True)


def _morphology(seed: int, roots: int) -> Morphology:
    """A small random morphology: ``roots`` roots, each with 0-2 children."""
    rng = np.random.default_rng(seed)

    def branch(n: int) -> Branch:
        return Branch(rng.random((n, 3)) * 10, rng.random(n) + 0.1)

    top = []
    for _ in range(roots):
        b = branch(int(rng.integers(1, 5)))
        for _ in range(int(rng.integers(0, 3))):
            b.attach_child(branch(int(rng.integers(1, 4))))
        top.append(b)
    return Morphology(top)


def _seen(ps, _=None):
    """What a view shows after a filter change (the change's own return value,
    None, is passed as ``_`` so the change runs first)."""
    return ps.get_loaded_chunks(), ps.load_ids()


class ParityMachine(RuleBasedStateMachine):
    """Random BSB workflows on both engines at once."""

    tags = Bundle("tags")

    @initialize(
        cells=st.lists(
            st.tuples(types, coords, st.integers(1, 6)), min_size=1, max_size=4
        )
    )
    def start(self, cells):
        """A fresh twin network. Every sequence starts with cells in a few chunks, so
        that filters, labels and connections act on something from the first step."""
        self.dir = tempfile.mkdtemp(prefix="bsb-store-parity-")
        self.twin = Twin(self.dir)
        self.filters: dict[str, list[int]] = {t: [] for t in TYPES}
        self.label_filters: dict[str, list[str] | None] = {t: None for t in TYPES}
        self.morphs: set[str] = set()
        self.ghosts: set[str] = set()  # removed, but still in bsb-hdf5's metadata
        self.files: set[str] = set()
        # bsb-hdf5's clear_placement raises (and leaves no placement group) until a
        # chunk was written: see divergence clear-placement-fresh.
        self.placed = False
        # Tags that hold connections made before the last clear_placement: bsb-hdf5
        # cannot clear them (divergence clear-set-after-clear-placement).
        self.connected: set[str] = set()
        self.stale: set[str] = set()
        for ct, at, n in cells:
            pos = np.arange(n * 3, dtype=float).reshape(n, 3) + sum(at)
            self.both(
                f"{ct}.append_data({at}, n={n})",
                lambda s, ct=ct, at=at, pos=pos: s.ps(ct).append_data(
                    Chunk(at, (100.0,) * 3), pos
                ),
            )
        self.placed = True

    def teardown(self):
        if hasattr(self, "twin"):
            self.twin.close()
            shutil.rmtree(self.dir, ignore_errors=True)

    def both(self, what, fn):
        return self.twin.both(what, fn, known=KNOWN)

    def view_len(self, ct: str) -> int:
        return self.twin.sides[1].ps(ct).__len__()

    # ---------------------------------------------------------------- placement
    @rule(
        ct=types,
        at=coords,
        form=forms,
        n=st.integers(0, 6),
        seed=st.integers(0, 2**16),
        rotations=st.booleans(),
        extra=st.booleans(),
        with_morphologies=st.booleans(),
    )
    def append_data(self, ct, at, form, n, seed, rotations, extra, with_morphologies):
        rng = np.random.default_rng(seed)
        pos = rng.random((n, 3)) * 100
        rot = rng.random((n, 3)) * 360 if rotations else None
        add = {"w": rng.random(n)} if extra else None
        names = sorted(self.morphs)
        # bsb-hdf5 crashes half-way through appending morphologies to a view with a
        # label filter (divergence append-morphologies-half-done) ...
        # ... and appending morphologies for zero cells (numpy's vectorize refuses
        # size 0), after the chunk was created.
        with_morphologies &= self.label_filters[ct] is None and n > 0
        idx = rng.integers(0, len(names), n) if names and with_morphologies else None

        def call(side):
            morphos = None
            if idx is not None:
                repo = side.network.morphologies
                loaders = [repo.preload(name) for name in names]
                morphos = MorphologySet(loaders, idx)
            side.ps(ct).append_data(
                chunk_as(at, form),
                pos,
                morphologies=morphos,
                rotations=rot,
                additional=add,
            )

        out = self.both(
            f"{ct}.append_data({at}, n={n}, rot={rotations}, add={extra})", call
        )
        self.placed |= out.error is None

    @rule(at=coords, form=forms, n=st.integers(0, 5))
    def append_entities(self, at, form, n):
        out = self.both(
            f"e.append_entities({at}, {n})",
            lambda s: s.ps("e").append_entities(chunk_as(at, form), n),
        )
        self.placed |= out.error is None

    # ------------------------------------------------------------------ filters
    @rule(ct=types, chunks=st.lists(st.tuples(coords, forms), max_size=3))
    def set_chunk_filter(self, ct, chunks):
        given = [chunk_as(c, f) for c, f in chunks]
        self.filters[ct] = sorted({Chunk(c, None).id for c, _ in chunks})
        self.both(
            f"{ct}.set_chunk_filter({chunks})",
            lambda s: _seen(s.ps(ct), s.ps(ct).set_chunk_filter(given)),
        )

    @rule(ct=types, at=coords, form=forms)
    def include_chunk(self, ct, at, form):
        cid = Chunk(at, None).id
        if cid in self.filters[ct]:
            return  # bsb-hdf5 would list it twice (see divergence include-twice)
        self.filters[ct] = sorted({*self.filters[ct], cid})
        self.both(
            f"{ct}.include_chunk({at})",
            lambda s: _seen(s.ps(ct), s.ps(ct).include_chunk(chunk_as(at, form))),
        )

    @rule(ct=types, data=st.data(), form=st.sampled_from(["sized", "bare"]))
    def exclude_chunk(self, ct, data, form):
        if not self.filters[ct]:
            return  # bsb-hdf5 raises (see divergence exclude-unfiltered)
        cid = data.draw(st.sampled_from(self.filters[ct]))
        self.filters[ct].remove(cid)
        chunk = Chunk.from_id(cid, (100.0,) * 3 if form == "sized" else None)
        self.both(
            f"{ct}.exclude_chunk({cid})",
            lambda s: _seen(s.ps(ct), s.ps(ct).exclude_chunk(chunk)),
        )

    @rule(ct=types)
    def clear_chunk_filter(self, ct):
        self.filters[ct] = []
        self.both(
            f"{ct}.clear_chunk_filter()",
            lambda s: _seen(s.ps(ct), s.ps(ct).clear_chunk_filter()),
        )

    @rule(ct=types, labels=st.none() | st.lists(st.sampled_from(LABELS), max_size=2))
    def set_label_filter(self, ct, labels):
        self.label_filters[ct] = labels
        self.both(
            f"{ct}.set_label_filter({labels})",
            lambda s: s.ps(ct).set_label_filter(labels),
        )

    # ------------------------------------------------------------------- labels
    @rule(
        ct=types,
        labels=label_lists,
        data=st.data(),
        how=st.sampled_from(["label", "remove_labels", "label_by_mask", "remove_mask"]),
    )
    def labelling(self, ct, labels, data, how):
        stored = {c.id for c in self.twin.sides[1].ps(ct).get_all_chunks()}
        if not set(self.filters[ct]) <= stored:
            # bsb-hdf5 fails half-way through labelling a view whose chunk filter
            # names a chunk the set does not have (divergence label-absent-chunk).
            return
        n = self.view_len(ct)
        if how.endswith("mask"):
            size = data.draw(st.sampled_from([n, n, n + 1]), label="mask size")
            cells = np.array(
                data.draw(st.lists(st.booleans(), min_size=size, max_size=size)),
                dtype=bool,
            )
        else:
            hi = n + 1 if data.draw(st.booleans(), label="oob") else max(n, 1)
            cells = np.array(
                data.draw(st.lists(st.integers(-1 if hi > n else 0, hi - 1), max_size=6)),
                dtype=int,
            )
            if n == 0 and cells.size:
                cells[:] = data.draw(st.sampled_from([-1, 0, 1]))
        method = {
            "label_by_mask": "label_by_mask",
            "remove_mask": "remove_labels_by_mask",
        }.get(how, how)
        self.both(
            f"{ct}.{method}({labels}, {cells.tolist()})",
            lambda s: getattr(s.ps(ct), method)(labels, cells),
        )

    # -------------------------------------------------------------------- reads
    @rule(
        ct=st.sampled_from([*TYPES, "e"]),
        what=st.sampled_from(
            [
                *PLACEMENT_READS,
                "get_all_chunks",
                "get_loaded_chunks",
                "get_chunk_stats",
                "get_label_filter",
            ]
        ),
        labels=st.none() | st.lists(st.sampled_from(LABELS), max_size=2),
    )
    def read_view(self, ct, what, labels):
        def call(side):
            ps = side.ps(ct)
            if what == "len":
                return len(ps)
            if what == "load_morphologies_empty":
                return ps.load_morphologies(allow_empty=True)
            if what == "load_additional_w":
                return ps.load_additional("w")
            if what in ("get_labelled", "get_label_mask"):
                return getattr(ps, what)(labels)
            return getattr(ps, what)()

        self.both(f"{ct}.{what}({labels})", call)

    @rule(
        ct=types,
        chunks=st.none() | st.lists(st.tuples(coords, forms), min_size=1, max_size=3),
        labels=st.none() | st.lists(st.sampled_from(LABELS), max_size=2),
        what=st.sampled_from(
            ["load_ids", "load_positions", "len", "convert_to_local", "convert_own_ids"]
        ),
    )
    def read_fresh_view(self, ct, chunks, labels, what):
        given = None if chunks is None else [chunk_as(c, f) for c, f in chunks]

        def call(side):
            ps = side.network.get_placement_set(ct, chunks=given, labels=labels)
            if what == "len":
                return len(ps)
            if what == "convert_to_local":
                return ps.convert_to_local(np.arange(len(ps)))
            if what == "convert_own_ids":
                return ps.convert_to_local(ps.load_ids())
            return getattr(ps, what)()

        self.both(f"get_placement_set({ct}, {chunks}, {labels}).{what}", call)

    @rule(ct=types, chunks=st.lists(coords, min_size=1, max_size=2, unique=True))
    def read_in_chunk_context(self, ct, chunks):
        def call(side):
            ps = side.ps(ct)
            error = None
            with ps.chunk_context([Chunk(c, None) for c in chunks]):
                # bsb-hdf5 does not restore the filter when the block raises
                # (divergence chunk-context-on-error): leave the block normally.
                try:
                    inner = (ps.load_ids(), ps.load_positions(), len(ps))
                except Exception as e:
                    error = e
            if error is not None:
                raise error
            return inner, ps.load_ids()

        self.both(f"{ct}.chunk_context({chunks})", call)

    # ------------------------------------------------------------- connectivity
    @rule(
        target=tags,
        tag=st.sampled_from(TAGS),
        data=st.data(),
        n=st.integers(0, 8),
        points=st.booleans(),
    )
    def connect_cells(self, tag, data, n, points):
        pre, post = tag.split("_to_")
        # Like BSB's connection strategies, connect from a fresh view of one chunk
        # of the presynaptic set (bsb-hdf5 then sorts each block), or from the
        # persistent view with its filters.
        stored = self.twin.sides[1].ps(pre).get_all_chunks()
        one = (
            tuple(data.draw(st.sampled_from(stored)))
            if stored and data.draw(st.booleans(), label="one presynaptic chunk")
            else None
        )

        def pre_view(side):
            if one is None:
                return side.ps(pre)
            return side.network.get_placement_set(pre, chunks=[Chunk(one, None)])

        np_, nq = len(pre_view(self.twin.sides[1])), self.view_len(post)
        if not np_ or not nq:
            n = 0
        src = np.full((n, 3), -1)
        dst = np.full((n, 3), -1)
        if n:
            src[:, 0] = data.draw(
                st.lists(st.integers(0, np_ - 1), min_size=n, max_size=n)
            )
            dst[:, 0] = data.draw(
                st.lists(st.integers(0, nq - 1), min_size=n, max_size=n)
            )
            if points:
                src[:, 1:] = data.draw(st.integers(0, 3)), data.draw(st.integers(0, 9))

        def call(side):
            net = side.network
            net.connect_cells(pre_view(side), side.ps(post), src, dst, tag)
            # What was stored, in stored order (needs no placement stats).
            return list(net.get_connectivity_set(tag).flat_iter_connections("out"))

        self.both(
            f"connect_cells({tag}, {src[:, 0].tolist()}, {dst[:, 0].tolist()}, "
            f"from chunk {one})",
            call,
        )
        if n:
            self.connected.add(tag)
        return tag

    @rule(
        target=tags,
        tag=st.sampled_from(TAGS),
        src=coords,
        dst=coords,
        seed=st.integers(0, 2**16),
        n=st.integers(1, 6),
    )
    def chunk_connect(self, tag, src, dst, seed, n):
        rng = np.random.default_rng(seed)
        s = np.column_stack([rng.integers(0, 5, n), np.full(n, -1), np.full(n, -1)])
        t = np.column_stack([rng.integers(0, 5, n), np.full(n, -1), np.full(n, -1)])
        pre, post = tag.split("_to_")

        def call(side):
            net = side.network
            cs = net.require_connectivity_set(
                net.cell_types[pre], net.cell_types[post], tag
            )
            cs.chunk_connect(Chunk(src, (100.0,) * 3), Chunk(dst, (100.0,) * 3), s, t)
            return list(cs.flat_iter_connections("inc"))

        self.both(f"chunk_connect({tag}, {src}, {dst}, n={n})", call)
        self.connected.add(tag)
        return tag

    @rule(
        tag=tags,
        what=st.sampled_from(
            ["len", "chunk_stats", "local_chunks", "global_chunks", "block", "local"]
        ),
        direction=st.sampled_from(["inc", "out"]),
        lc=coords,
        gc=coords,
    )
    def read_connectivity(self, tag, what, direction, lc, gc):
        def call(side):
            cs = side.cs(tag)
            if what == "len":
                return len(cs)
            if what == "chunk_stats":
                return cs.get_chunk_stats()
            if what == "local_chunks":
                return cs.get_local_chunks(direction)
            if what == "global_chunks":
                return cs.get_global_chunks(direction, Chunk(lc, None))
            if what == "block":
                return cs.load_block_connections(
                    direction, Chunk(lc, None), Chunk(gc, None)
                )
            return cs.load_local_connections(direction, Chunk(lc, None))

        self.both(f"{tag}.{what}({direction}, {lc}, {gc})", call)

    @rule(tag=tags, nested=st.booleans(), data=st.data())
    def iterate_connectivity(self, tag, nested, data):
        chunks = [
            Chunk(c, None) for c in data.draw(st.lists(coords, max_size=2, unique=True))
        ]
        pins = pin_combinations(chunks)
        direction, local_, global_ = data.draw(st.sampled_from(pins), label="pins")

        def materialize(it):
            """Nested iterables -> nested lists (a level is a (key, iterable) pair;
            a data block is a pair of arrays)."""
            out = []
            for key, value in it:
                if isinstance(value, (tuple, list, np.ndarray)):
                    out.append((key, value))
                else:
                    out.append((key, materialize(value)))
            return out

        def call(side):
            cs = side.cs(tag)
            if nested:
                return materialize(cs.nested_iter_connections(direction, local_, global_))
            return list(cs.flat_iter_connections(direction, local_, global_))

        self.both(
            f"{tag}.{'nested' if nested else 'flat'}_iter({direction}, {local_}, {global_})",
            call,
        )

    @rule(
        tag=tags,
        data=st.data(),
        incoming=st.booleans(),
        scope=st.sampled_from([None, "globals", "scoped"]),
    )
    def load_connections(self, tag, data, incoming, scope):
        frm = data.draw(st.none() | st.lists(coords, min_size=1, max_size=2, unique=True))
        to = data.draw(st.none() | st.lists(coords, min_size=1, max_size=2, unique=True))

        def call(side):
            it = side.cs(tag).load_connections()
            if incoming:
                it = it.incoming()
            if frm is not None:
                it = it.from_([Chunk(c, None) for c in frm])
            if to is not None:
                it = it.to([Chunk(c, None) for c in to])
            if scope == "globals":
                it = it.as_globals()
            elif scope == "scoped":
                it = it.as_scoped()
            return it.all(), [(a, b, c, d) for a, b, c, d in it.chunk_iter()]

        self.both(
            f"{tag}.load_connections(inc={incoming}, from={frm}, to={to}, {scope})", call
        )

    # ------------------------------------------------------------- morphologies
    @rule(
        name=st.sampled_from(MORPHS),
        seed=st.integers(0, 2**16),
        roots=st.integers(1, 3),
        overwrite=st.booleans(),
    )
    def save_morphology(self, name, seed, roots, overwrite):
        def call(side):
            stored = side.network.morphologies.save(
                name, _morphology(seed, roots), overwrite=overwrite
            )
            return stored.name

        out = self.both(
            f"morphologies.save({name}, seed={seed}, overwrite={overwrite})", call
        )
        if out.error is None:
            self.morphs.add(name)
            self.ghosts.discard(name)

    @rule(
        name=st.sampled_from(MORPHS),
        what=st.sampled_from(["has", "get_meta", "load", "list", "all", "remove"]),
    )
    def morphology_call(self, name, what):
        def call(side):
            repo = side.network.morphologies
            if what == "load":
                m = repo.load(name)
                return (
                    [len(b) for b in m.branches],
                    m.points,
                    m.radii,
                    [b.parent is None for b in m.branches],
                    m.meta,
                )
            if what in ("list", "all"):
                return sorted(getattr(repo, what)(), key=lambda m: getattr(m, "name", m))
            return getattr(repo, what)(name)

        ghosts = self.ghosts if what in ("get_meta", "all", "list") else set()
        if ghosts and (what != "get_meta" or name in ghosts):
            note = f" [ghosts={','.join(sorted(ghosts))}]"
        else:
            note = ""
        out = self.both(f"morphologies.{what}({name}){note}", call)
        if what == "remove" and out.error is None:
            self.morphs.discard(name)
            self.ghosts.add(name)

    # -------------------------------------------------------------------- files
    @rule(
        fid=st.sampled_from(["f1", "f2", None]),
        content=st.text(max_size=20)
        | st.binary(max_size=20).map(lambda b: b.rstrip(b"\0")),
        overwrite=st.booleans(),
    )
    def store_file(self, fid, content, overwrite):
        meta = {"k": 1}

        def call(side):
            got = side.network.files.store(
                content, id=fid, meta=meta, overwrite=overwrite
            )
            return got if fid is not None else "new id"

        self.both(f"files.store({fid!r}, {content!r}, overwrite={overwrite})", call)

    @rule(
        fid=st.sampled_from(["f1", "f2", "missing"]),
        what=st.sampled_from(["load", "remove", "meta", "all"]),
    )
    def file_call(self, fid, what):
        def call(side):
            files = side.network.files
            if what == "load":
                content, meta = files.load(fid)
                return content, {k: v for k, v in meta.items() if k != "mtime"}
            if what == "meta":
                return {k: v for k, v in files.get_meta(fid).items() if k != "mtime"}
            if what == "all":
                return sorted(
                    k
                    for k, m in files.all().items()
                    if not m.get("active_config") and k in ("f1", "f2")
                )
            return files.remove(fid)

        self.both(f"files.{what}({fid})", call)

    # ------------------------------------------------------------------- clears
    @rule(
        ct=types, chunks=st.none() | st.lists(coords, min_size=1, max_size=2, unique=True)
    )
    def clear_placement_set(self, ct, chunks):
        given = None if chunks is None else [Chunk(c, (100.0,) * 3) for c in chunks]
        self.both(f"{ct}.clear({chunks})", lambda s: s.ps(ct).clear(chunks=given))

    @rule(tag=tags)
    def clear_connectivity_set(self, tag):
        if tag in self.stale:
            return
        self.both(f"{tag}.clear()", lambda s: s.cs(tag).clear())
        self.connected.discard(tag)

    @rule()
    def clear_connectivity(self):
        self.both("clear_connectivity()", lambda s: s.network.clear_connectivity())
        self.connected.clear()
        self.stale.clear()

    @precondition(lambda self: self.placed)
    @rule()
    def clear_placement(self):
        self.both("clear_placement()", lambda s: s.network.clear_placement())
        self.placed = False
        self.stale |= self.connected


ParityMachine.TestCase.settings = PARITY_SETTINGS
TestParity = ParityMachine.TestCase
