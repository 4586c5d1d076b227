"""Compaction: what it keeps, what it drops, and etcd's errors around it."""

from __future__ import annotations

import grpc
import pytest
from kvharness import Harness

from flotilla.node.api.etcdpb import rpc_pb2 as pb
from flotilla.node.kv import errors


@pytest.fixture
def hist(h: Harness) -> Harness:
    # An empty store is at revision 1, as etcd's, so the first change is revision 2.
    h.put(b"a", b"1")  # 2
    h.put(b"a", b"2")  # 3
    h.put(b"b", b"1")  # 4
    h.delete(b"b")  # 5
    h.put(b"a", b"3")  # 6
    h.put(b"c", b"1")  # 7
    return h


def records(h: Harness) -> int:
    return sum(1 for _ in h.db.iterator(prefix=b"kv/r"))


def test_compact_keeps_reads_at_and_after_revision(hist: Harness) -> None:
    assert records(hist) == 6
    resp = hist.compact(5)
    assert resp.header.revision == 7
    assert hist.store.compacted_revision == 5
    # a@3 is a's value at 5 and stays; a@2 goes; b's whole history (deleted at 5) goes.
    assert records(hist) == 3
    assert hist.get(b"a", revision=5).kvs[0].value == b"2"
    assert hist.get(b"b", revision=5).count == 0
    assert hist.get(b"a", b"\x00", revision=6).count == 1
    assert hist.get(b"a").kvs[0].value == b"3"


def test_reads_below_compaction_fail(hist: Harness) -> None:
    hist.compact(5)
    with pytest.raises(errors.CompactedError) as exc:
        hist.get(b"a", revision=4)
    assert exc.value.code == grpc.StatusCode.OUT_OF_RANGE
    assert exc.value.message == "etcdserver: mvcc: required revision has been compacted"
    with pytest.raises(errors.CompactedError):
        hist.txn(
            pb.TxnRequest(
                success=[pb.RequestOp(request_range=pb.RangeRequest(key=b"a", revision=3))]
            )
        )


def test_compact_errors(hist: Harness) -> None:
    with pytest.raises(errors.FutureRevisionError):
        hist.compact(8)
    hist.compact(4)
    with pytest.raises(errors.CompactedError):
        hist.compact(4)
    with pytest.raises(errors.CompactedError):
        hist.compact(3)
    hist.compact(7)
    assert hist.get(b"a").kvs[0].version == 3


def test_compaction_survives_reopen(hist: Harness) -> None:
    hist.compact(6)
    store = hist.reopen()
    assert store.compacted_revision == 6 and store.revision == 7
    with pytest.raises(errors.CompactedError):
        hist.get(b"a", revision=5)
    kv = hist.get(b"a").kvs[0]
    assert (kv.create_revision, kv.version, kv.value) == (2, 3, b"3")
    # Versions continue from the compacted history.
    hist.put(b"a", b"4")
    assert hist.get(b"a").kvs[0].version == 4


def test_compact_at_current_revision_after_delete(h: Harness) -> None:
    h.put(b"a")
    h.delete(b"a")
    h.compact(3)
    assert records(h) == 0
    store = h.reopen()
    assert store.revision == 3  # the revision survives even with no records left
    assert h.put(b"a").header.revision == 4


def test_compact_an_empty_store_at_revision_1(h: Harness) -> None:
    """etcd allows compacting a fresh store at its revision 1; nothing changes but the mark."""
    with pytest.raises(errors.CompactedError):
        h.compact(0)
    with pytest.raises(errors.FutureRevisionError):
        h.compact(2)
    resp = h.compact(1)
    assert resp.header.revision == 1
    assert h.store.compacted_revision == 1 and h.store.revision == 1
    assert records(h) == 0
    assert h.get(b"a", revision=1).count == 0
    with pytest.raises(errors.CompactedError):
        h.compact(1)
    store = h.reopen()
    assert store.compacted_revision == 1 and store.revision == 1
    assert h.put(b"a").header.revision == 2
