"""Journaled transactions: publish, abort, and recovery of interrupted journals."""

import h5py
import numpy as np
import pytest

from bsb_store.core.writes.txn import JOURNAL, STAGING, Transaction, recover

pytestmark = pytest.mark.serial_only


@pytest.fixture
def f(tmp_path):
    with h5py.File(tmp_path / "t.h5", "w") as f:
        f.create_dataset("counts", data=np.zeros(3, np.int64), maxshape=(None,))
        f.create_group("store")
        f.create_group("sets")
        yield f


def test_publish_applies_every_op_and_clears_the_journal(f):
    txn = Transaction(f)
    staged = txn.staging_path()
    f.create_group(staged).create_dataset("x", data=[1, 2])
    txn.resize("counts", 5)
    txn.write("counts", 3, [7, 8])
    txn.set_attr("sets", "columns", '{"a": 1}')
    txn.replace(staged, "sets/new")
    txn.commit()
    assert f["counts"][()].tolist() == [0, 0, 0, 7, 8]
    assert f["sets"].attrs["columns"] == '{"a": 1}'
    assert f["sets/new/x"][()].tolist() == [1, 2]
    assert JOURNAL not in f and STAGING not in f


def test_complete_journal_is_redone_idempotently(f):
    txn = Transaction(f)
    staged = txn.staging_path()
    f.create_group(staged)
    txn.write("counts", 0, [5, 6, 7])
    txn.replace(staged, "sets/a")
    txn.delete("sets/gone")
    from bsb_store.core.writes import txn as mod

    mod.write_journal(f, txn._ops, txn._payloads)  # crash right after journaling
    assert f["counts"][0] == 0
    assert recover(f) == "redone"
    assert f["counts"][()].tolist() == [5, 6, 7] and "sets/a" in f
    # Redoing an already applied journal changes nothing.
    mod.write_journal(f, txn._ops, txn._payloads)
    assert recover(f) == "redone"
    assert f["counts"][()].tolist() == [5, 6, 7] and "sets/a" in f
    assert recover(f) is None


def test_incomplete_journal_and_staging_are_discarded(f):
    g = f.create_group(JOURNAL)
    g.attrs["ops"] = '[{"op": "write", "path": "counts", "start": 0, "p": 0}]'
    f.create_group(f"{STAGING}/leftover")
    assert recover(f) == "discarded"
    assert f["counts"][()].tolist() == [0, 0, 0]
    assert JOURNAL not in f and STAGING not in f


def test_empty_transaction_writes_no_journal(f):
    Transaction(f).commit()
    assert JOURNAL not in f
