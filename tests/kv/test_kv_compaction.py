"""Compaction: what it keeps, what it drops, and etcd's errors around it."""

from __future__ import annotations

import grpc
import pytest
from kvharness import Harness

from flotilla.node.api.etcdpb import rpc_pb2 as pb
from flotilla.node.kv import errors


@pytest.fixture
def hist(h: Harness) -> Harness:
    h.put(b"a", b"1")  # 1
    h.put(b"a", b"2")  # 2
    h.put(b"b", b"1")  # 3
    h.delete(b"b")  # 4
    h.put(b"a", b"3")  # 5
    h.put(b"c", b"1")  # 6
    return h


def records(h: Harness) -> int:
    return sum(1 for _ in h.db.iterator(prefix=b"kv/r"))


def test_compact_keeps_reads_at_and_after_revision(hist: Harness) -> None:
    assert records(hist) == 6
    resp = hist.compact(4)
    assert resp.header.revision == 6
    assert hist.store.compacted_revision == 4
    # a@2 is a's value at 4 and stays; a@1 goes; b's whole history (deleted at 4) goes.
    assert records(hist) == 3
    assert hist.get(b"a", revision=4).kvs[0].value == b"2"
    assert hist.get(b"b", revision=4).count == 0
    assert hist.get(b"a", b"\x00", revision=5).count == 1
    assert hist.get(b"a").kvs[0].value == b"3"


def test_reads_below_compaction_fail(hist: Harness) -> None:
    hist.compact(4)
    with pytest.raises(errors.CompactedError) as exc:
        hist.get(b"a", revision=3)
    assert exc.value.code == grpc.StatusCode.OUT_OF_RANGE
    assert exc.value.message == "etcdserver: mvcc: required revision has been compacted"
    with pytest.raises(errors.CompactedError):
        hist.txn(
            pb.TxnRequest(
                success=[pb.RequestOp(request_range=pb.RangeRequest(key=b"a", revision=2))]
            )
        )


def test_compact_errors(hist: Harness) -> None:
    with pytest.raises(errors.FutureRevisionError):
        hist.compact(7)
    hist.compact(3)
    with pytest.raises(errors.CompactedError):
        hist.compact(3)
    with pytest.raises(errors.CompactedError):
        hist.compact(2)
    hist.compact(6)
    assert hist.get(b"a").kvs[0].version == 3


def test_compaction_survives_reopen(hist: Harness) -> None:
    hist.compact(5)
    store = hist.reopen()
    assert store.compacted_revision == 5 and store.revision == 6
    with pytest.raises(errors.CompactedError):
        hist.get(b"a", revision=4)
    kv = hist.get(b"a").kvs[0]
    assert (kv.create_revision, kv.version, kv.value) == (1, 3, b"3")
    # Versions continue from the compacted history.
    hist.put(b"a", b"4")
    assert hist.get(b"a").kvs[0].version == 4


def test_compact_at_current_revision_after_delete(h: Harness) -> None:
    h.put(b"a")
    h.delete(b"a")
    h.compact(2)
    assert records(h) == 0
    store = h.reopen()
    assert store.revision == 2  # the revision survives even with no records left
    assert h.put(b"a").header.revision == 3
