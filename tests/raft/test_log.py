from __future__ import annotations

import pytest

from flotilla.node.raft.errors import CompactedError, RaftInvariantError
from flotilla.node.raft.log import RaftLog
from flotilla.node.raft.types import EMPTY_CONF, ENTRY_OVERHEAD, Entry, SnapshotMeta


def make(terms: list[int]) -> RaftLog:
    entries = [Entry(t, i + 1, b"x" * 10) for i, t in enumerate(terms)]
    return RaftLog(SnapshotMeta(0, 0, EMPTY_CONF), entries, 0, 0)


def test_conflicting_suffix_is_replaced_but_never_a_committed_entry() -> None:
    log = make([1, 1, 2, 2])
    log.commit_to(2)
    assert log.maybe_append(2, 1, 2, [Entry(3, 3), Entry(3, 4), Entry(3, 5)]) == (5, 3)
    assert [e.term for e in log.entries] == [1, 1, 3, 3, 3]
    assert log.stable == 2, "replaced entries are no longer durable"
    with pytest.raises(RaftInvariantError):
        log.append([Entry(4, 2)])


def test_duplicate_append_changes_nothing() -> None:
    log = make([1, 1, 2])
    assert log.maybe_append(0, 0, 0, list(log.entries)) == (3, 0)
    assert log.maybe_append(1, 2, 0, [Entry(2, 2)]) is None


def test_slice_respects_bytes_and_count_but_returns_at_least_one() -> None:
    log = make([1] * 10)
    size = 10 + ENTRY_OVERHEAD
    assert len(log.slice(1, size * 3, 100)) == 3
    assert len(log.slice(1, 1, 100)) == 1
    assert len(log.slice(4, 10**9, 2)) == 2
    assert log.bytes_between(2, 4) == 3 * size


def test_find_conflict_by_term_skips_whole_terms() -> None:
    log = make([1, 1, 1, 4, 4, 5, 5, 6])
    assert log.find_conflict_by_term(8, 3) == (3, 1)
    assert log.find_conflict_by_term(8, 5) == (7, 5)
    assert log.find_conflict_by_term(2, 1) == (2, 1)


def test_compaction_keeps_terms_and_refuses_compacted_reads() -> None:
    log = make([1, 1, 2, 2, 3])
    log.commit_to(5)
    log.applied_to(4)
    log.snapshot = SnapshotMeta(4, 2, EMPTY_CONF)
    log.compact(3)
    assert log.first_index() == 4 and log.term(3) == 2 and log.term(2) is None
    with pytest.raises(CompactedError):
        log.slice(3, 100, 100)
    assert [e.index for e in log.slice(4, 10**6, 10)] == [4, 5]
