"""Where bsb-hdf5 is wrong: each :class:`Divergence` recognises the reference engine's
wrong outcome of one kind of call and states what bsb-store must do instead. The same
list, in words, is in ``docs/plugin.rst`` ("Differences from bsb-hdf5")."""

from __future__ import annotations

from .harness import PLACEMENT_READS, Divergence, Outcome


def _calls(*prefixes: str):
    def match_call(what: str) -> bool:
        return what.startswith(prefixes)

    return match_call


def _raised(kind: str, says: str = ""):
    def match(outcome: Outcome) -> bool:
        return outcome.error == kind and says in outcome.detail

    return match


def _returned(outcome: Outcome) -> bool:
    """The call returned, or (a read of morphologies or rotations of a view without
    any) raised bsb's DatasetNotFoundError as the interface says it must."""
    return outcome.error in (None, "bsb.DatasetNotFoundError")


def _reads(what: str) -> bool:
    """Whether a call (by its description) only reads placement data."""
    call = what.split("(")[0]
    return call.startswith("get_placement_set") or call.split(".")[-1] in {
        *PLACEMENT_READS,
        "chunk_context",
        "get_chunk_stats",
        "load_connections",  # reads the placement sets' chunk stats for its offsets
        # filter changes, each followed by a read of the view (`_seen`)
        "set_chunk_filter",
        "include_chunk",
        "exclude_chunk",
        "clear_chunk_filter",
    }


def _empty(outcome: Outcome) -> bool:
    value = outcome.value
    if outcome.error is not None:
        return False
    if isinstance(value, tuple) and value[:1] == ("array",):
        return value[2][0] == 0
    if isinstance(value, tuple) and value[:1] == ("objects",):
        return value[1] == []
    return False


def _padded(what: str, ref: Outcome, ours: Outcome) -> bool:
    """Ours holds every row the reference holds, and more."""

    def columns(value):
        if value[0] == "rotations":
            value = value[1]
        if value[0] == "array":
            return {"": value}
        return dict(value[1])  # ("dict", [(key, array), ...])

    if ours.error is not None:
        return False
    theirs, mine = columns(ref.value), columns(ours.value)
    if theirs.keys() != mine.keys():
        return False
    for key, r in theirs.items():
        o = mine[key]
        rows, more = r[3], o[3]
        if len(more) <= len(rows) and rows != more:
            return False
        if any(v not in more for v in rows):
            return False
    return True


def _labelling(what: str) -> bool:
    return what.split("(")[0].split(".")[-1] in {
        "label",
        "remove_labels",
        "label_by_mask",
        "remove_labels_by_mask",
    }


def divergence(
    name: str, calls, hdf5_raises: str, store_does, says: str = ""
) -> Divergence:
    """``calls`` (a predicate on the call's description) make bsb-hdf5 raise
    ``hdf5_raises`` (with ``says`` in its message); ``store_does`` checks bsb-store's
    outcome."""
    hdf5 = _raised(hdf5_raises, says)
    return Divergence(
        name,
        matches=lambda what, ref: calls(what) and hdf5(ref),
        expected=lambda what, ref, ours: store_does(ours),
    )


KNOWN: list[Divergence] = [
    # FileStore: a missing id is a KeyError in bsb-hdf5; the interface (and bsb-core's
    # callers) expect FileNotFoundError.
    divergence(
        "file-missing-id",
        _calls("files.load(", "files.remove(", "files.meta("),
        "KeyError",
        _raised("FileNotFoundError"),
    ),
    # A placement set that was required but never written has no `chunks` attribute
    # in bsb-hdf5: counting it under a chunk filter raises KeyError. It is empty.
    divergence(
        "unwritten-set-filtered",
        _reads,
        "KeyError",
        _returned,
        says="can't locate attribute: 'chunks'",
    ),
    # ... and labelling it: nothing to label (or ids out of range for an empty view).
    divergence(
        "unwritten-set-filtered",
        _labelling,
        "KeyError",
        lambda ours: ours.error in (None, "bsb.LabellingError"),
        says="can't locate attribute: 'chunks'",
    ),
    # bsb-hdf5 concatenates the per-chunk arrays of the filter's chunks; when none of
    # them holds data (a filter on chunks the set does not have), numpy raises. The
    # read is empty.
    divergence(
        "filtered-read-of-absent-chunks",
        _reads,
        "ValueError",
        _returned,
        says="need at least one array to concatenate",
    ),
    # ... and a label filter makes it open the chunk groups of the filter, which do
    # not exist: KeyError. The read is empty.
    divergence(
        "filtered-read-of-absent-chunks",
        _reads,
        "KeyError",
        _returned,
        says="(component not found)",
    ),
    # convert_to_local of no ids (an empty view) indexes a 1-D empty array with two
    # indices in bsb-hdf5. No ids convert to no ids.
    divergence(
        "convert-no-ids",
        _calls("get_placement_set("),
        "IndexError",
        _returned,
        says="too many indices for array",
    ),
    # ... and when none of the ids is in the filter's chunks it returns a *bool*
    # array of False, one per cell of the view, instead of no ids.
    Divergence(
        "convert-no-ids",
        matches=lambda what, ref: (
            what.endswith((".convert_to_local", ".convert_own_ids"))
            and ref.error is None
            and ref.value[:2] == ("array", "b")
            and not any(ref.value[3])
        ),
        expected=lambda what, ref, ours: ours.value == ("array", "i", (0,), []),
    ),
    # load_local_connections of a local chunk without connections: KeyError in
    # bsb-hdf5; three empty arrays in bsb-store.
    divergence(
        "local-connections-absent-chunk",
        lambda what: ".local(" in what,
        "KeyError",
        _returned,
        says="doesn't exist",
    ),
    # Entities have no positions, and bsb-hdf5 sizes labels by the positions: for an
    # entity type it returns an empty label mask, no labelled cells, no unique label
    # sets, and an empty (0, 3) array of positions. bsb-store counts the entities
    # (a mask per entity, the empty label set) and has no positions to give
    # (DatasetNotFoundError, as the interface says).
    Divergence(
        "entity-labels-and-positions",
        matches=lambda what, ref: what.startswith("e.") and _empty(ref),
        expected=lambda what, ref, ours: ours.error in (None, "bsb.DatasetNotFoundError"),
    ),
    # load_additional(key) of a key never stored: bsb-hdf5 returns an empty array
    # whatever the number of cells; bsb-store says the key does not exist.
    Divergence(
        "additional-missing-key",
        matches=lambda what, ref: (
            ".load_additional_w(" in what and ref.error is None and ref.value[2] == (0,)
        ),
        expected=lambda what, ref, ours: ours.error == "bsb.DatasetNotFoundError",
    ),
    # Cells appended without a column that other appends gave (rotations, an
    # additional key): bsb-hdf5 stores nothing for them, so the read returns fewer
    # rows than there are cells, and rows no longer line up with cells. bsb-store
    # fills them (zero rotations; NaN for float columns).
    Divergence(
        "columns-unpadded",
        matches=lambda what, ref: (
            (".load_additional" in what or ".load_rotations" in what)
            and ref.error is None
        ),
        expected=_padded,
    ),
    # bsb-hdf5's MorphologyRepository.remove deletes the data but leaves the name in
    # the metadata: get_meta, all() and list() still report the removed morphology
    # (the state machine marks such calls "[ghosts=...]"). It is gone.
    Divergence(
        "removed-morphology-lingers",
        matches=lambda what, ref: "[ghosts=" in what and ref.error is None,
        expected=lambda what, ref, ours: _without_ghosts(what, ref, ours),
    ),
]


def _without_ghosts(what: str, ref: Outcome, ours: Outcome) -> bool:
    ghosts = set(what.split("[ghosts=")[1].rstrip("]").split(","))
    if what.startswith("morphologies.get_meta("):
        return ours.error == "bsb.MissingMorphologyError"
    if isinstance(ref.value, list):

        def drop(items):
            return [
                v for v in items if (v[1] if isinstance(v, tuple) else v) not in ghosts
            ]

        return ours.error is None and drop(ref.value) == ours.value
    return False
