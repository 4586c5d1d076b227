"""RaftStorage round-trips the Raft state across reopen and refuses damaged records."""

from __future__ import annotations

import random

import pytest
from datadir import DataDir

from flotilla.node.raft.core import Config, InitialState, RaftCore
from flotilla.node.raft.types import (
    ConfState,
    Entry,
    EntryType,
    HardState,
    Ready,
    Snapshot,
    SnapshotMeta,
)
from flotilla.node.storage import CorruptDataError
from flotilla.node.storage.codec import HARD_STATE_KEY, SNAPSHOT_KEY, entry_key

CONF = ConfState(frozenset({1, 2, 3}), frozenset({4}), frozenset({5}))


def ents(first: int, last: int, term: int = 1) -> list[Entry]:
    return [Entry(term, i, f"e{i}t{term}".encode()) for i in range(first, last + 1)]


def test_empty_data_dir_loads_nothing(dd: DataDir) -> None:
    st = dd.storage.load()
    assert st.hard_state == HardState()
    assert st.snapshot.index == 0
    assert st.entries == []
    assert st.applied is None


def test_entries_and_hard_state_survive_reopen(dd: DataDir) -> None:
    written = [*ents(1, 4), Entry(2, 5, b"conf", EntryType.CONF_CHANGE), Entry(2, 6, b"")]
    dd.persist(Ready(hard_state=HardState(2, 3, 5), entries=written))
    st = dd.reopen().load()
    assert st.hard_state == HardState(2, 3, 5)
    assert st.entries == written
    assert [e.type for e in st.entries] == [EntryType.NORMAL] * 4 + [
        EntryType.CONF_CHANGE,
        EntryType.NORMAL,
    ]
    assert (dd.storage.first_index, dd.storage.last_index) == (1, 6)


def test_conflicting_append_truncates_the_suffix(dd: DataDir) -> None:
    dd.persist(Ready(entries=ents(1, 8)))
    dd.persist(Ready(entries=ents(4, 5, term=2)))
    assert dd.storage.last_index == 5
    assert dd.storage.load().entries == ents(1, 3) + ents(4, 5, term=2)
    # The in-memory last index is rebuilt on reopen: truncation still finds the old suffix.
    dd.persist(Ready(entries=ents(6, 9, term=2)))
    s = dd.reopen()
    assert s.last_index == 9
    dd.persist(Ready(entries=ents(3, 3, term=3)))
    assert dd.reopen().load().entries == ents(1, 2) + ents(3, 3, term=3)
    assert dd.db.get(entry_key(4)) is None


def test_append_must_continue_the_log(dd: DataDir) -> None:
    dd.persist(Ready(entries=ents(1, 3)))
    with pytest.raises(ValueError, match="do not continue"):
        dd.persist(Ready(entries=ents(5, 6)))


def test_snapshot_replaces_the_log(dd: DataDir) -> None:
    dd.persist(Ready(hard_state=HardState(1, 1, 3), entries=ents(1, 10)))
    meta = SnapshotMeta(20, 3, CONF)
    dd.storage.save_snapshot(meta, b"state")
    dd.persist(Ready(hard_state=HardState(3, 0, 20), snapshot=Snapshot(meta, b"state")))
    st = dd.reopen().load()
    assert st.snapshot == meta
    assert st.entries == []
    assert st.hard_state == HardState(3, 0, 20)
    assert list(dd.db.iterator(prefix=b"r/e/")) == []
    dd.persist(Ready(entries=ents(21, 22, term=3)))
    assert dd.reopen().load().entries == ents(21, 22, term=3)
    assert dd.storage.load_snapshot() == (meta, b"state")


def test_snapshot_and_entries_in_one_ready(dd: DataDir) -> None:
    dd.persist(Ready(entries=ents(1, 30)))
    meta = SnapshotMeta(20, 2, CONF)
    dd.storage.save_snapshot(meta, b"state")
    dd.persist(
        Ready(
            hard_state=HardState(2, 0, 21),
            snapshot=Snapshot(meta, b"state"),
            entries=ents(21, 22, term=2),
        )
    )
    st = dd.reopen().load()
    assert (st.snapshot, st.entries) == (meta, ents(21, 22, term=2))
    assert [k for k, _ in dd.db.iterator(prefix=b"r/e/")] == [entry_key(21), entry_key(22)]


def test_compaction_drops_entries_covered_by_a_snapshot(dd: DataDir) -> None:
    dd.persist(Ready(hard_state=HardState(1, 1, 10), entries=ents(1, 10)))
    meta = SnapshotMeta(6, 1, CONF)
    wb = dd.db.write_batch(sync=True)
    with pytest.raises(ValueError, match="beyond the snapshot"):
        dd.storage.compact(wb, 6)
    dd.storage.save_snapshot(meta, b"s")
    with dd.db.write_batch(sync=True) as wb:
        dd.storage.record_snapshot(wb, meta)
        dd.storage.compact(wb, 4)  # keep a few entries behind the snapshot for slow followers
    assert dd.storage.first_index == 5
    assert [k for k, _ in dd.db.iterator(prefix=b"r/e/")] == [entry_key(i) for i in range(5, 11)]
    st = dd.reopen().load()
    assert st.snapshot == meta
    assert st.entries == ents(7, 10)
    with dd.db.write_batch(sync=True) as wb:
        dd.storage.compact(wb, 6)
    assert dd.reopen().first_index == 7
    assert dd.storage.load().entries == ents(7, 10)


def test_compaction_past_the_last_entry_empties_the_log(dd: DataDir) -> None:
    dd.persist(Ready(entries=ents(1, 3)))
    meta = SnapshotMeta(3, 1, CONF)
    with dd.db.write_batch(sync=True) as wb:
        dd.storage.record_snapshot(wb, meta)
        dd.storage.compact(wb, 3)
    st = dd.reopen().load()
    assert (st.snapshot, st.entries) == (meta, [])
    dd.persist(Ready(entries=ents(4, 4)))
    assert dd.reopen().load().entries == ents(4, 4)


def _flip(dd: DataDir, key: bytes, pos: int) -> None:
    raw = bytearray(dd.db.get(key))
    raw[pos] ^= 0x10
    dd.db.put(key, bytes(raw), sync=True)


@pytest.mark.parametrize("pos", [0, 4, 11, 12, 13, -1])
def test_bit_flip_in_an_entry_is_detected(dd: DataDir, pos: int) -> None:
    dd.persist(Ready(entries=ents(1, 5)))
    _flip(dd, entry_key(3), pos)
    with pytest.raises(CorruptDataError) as err:
        dd.reopen().load()
    assert "log entry 3" in str(err.value)
    assert str(dd.root) in str(err.value)


def test_entry_under_the_wrong_key_is_detected(dd: DataDir) -> None:
    dd.persist(Ready(entries=ents(1, 5)))
    dd.db.put(entry_key(4), dd.db.get(entry_key(3)))
    with pytest.raises(CorruptDataError, match="log entry 4"):
        dd.storage.load()


def test_undecodable_entry_is_detected(dd: DataDir) -> None:
    dd.persist(Ready(entries=ents(1, 5)))
    dd.db.put(entry_key(2), b"\x00\x01")
    with pytest.raises(CorruptDataError, match="too short"):
        dd.storage.load()


def test_gap_in_the_log_is_detected(dd: DataDir) -> None:
    dd.persist(Ready(entries=ents(1, 5)))
    dd.db.delete(entry_key(3))
    with pytest.raises(CorruptDataError, match="expected entry 3, found 4"):
        dd.reopen().load()


def test_lost_committed_tail_is_detected(dd: DataDir) -> None:
    dd.persist(Ready(hard_state=HardState(1, 1, 5), entries=ents(1, 5)))
    dd.db.delete(entry_key(5))
    with pytest.raises(CorruptDataError, match="commit index 5 is beyond"):
        dd.reopen().load()


def test_damaged_hard_state_and_snapshot_meta_are_detected(dd: DataDir) -> None:
    meta = SnapshotMeta(3, 1, CONF)
    dd.storage.save_snapshot(meta, b"s")
    dd.persist(Ready(hard_state=HardState(1, 1, 3), snapshot=Snapshot(meta)))
    _flip(dd, HARD_STATE_KEY, 9)
    with pytest.raises(CorruptDataError, match="r/hs"):
        dd.reopen().load()
    _flip(dd, SNAPSHOT_KEY, 6)
    with pytest.raises(CorruptDataError, match="r/snap"):
        dd.reopen()


def test_a_raft_core_restarts_from_what_it_stored(dd: DataDir) -> None:
    """The storage speaks the core's language: persist its Readies, restart it from load()."""
    boot = InitialState.bootstrap([1])
    with dd.db.write_batch(sync=True) as wb:
        dd.storage.record_snapshot(wb, boot.snapshot)
    core = RaftCore(Config(1), boot, random.Random(1))
    core.campaign()
    for _ in range(3):
        core.propose([b"a", b"b"])
        while core.has_ready():
            rd = core.ready()
            dd.persist(rd)
            core.advance(rd)
    last, commit = core.last_index(), core.commit
    st = dd.reopen().load()
    assert st.snapshot == boot.snapshot
    st.applied = commit
    again = RaftCore(Config(1), st, random.Random(1))
    assert (again.last_index(), again.commit, again.term) == (last, commit, core.term)
