"""Watch replay history and lease-attached keys."""

from __future__ import annotations

import pytest
from kvharness import Harness

from flotilla.node.api.etcdpb import kv_pb2
from flotilla.node.api.etcdpb import rpc_pb2 as pb
from flotilla.node.kv import errors

PUT = kv_pb2.Event.PUT
DELETE = kv_pb2.Event.DELETE


def summary(events: list[kv_pb2.Event]) -> list[tuple[int, bytes, int, bytes]]:
    return [(e.type, e.kv.key, e.kv.mod_revision, e.kv.value) for e in events]


@pytest.fixture
def hist(h: Harness) -> Harness:
    # The empty store is at revision 1, as etcd's.
    h.put(b"a", b"1")  # 2
    h.put(b"b", b"1")  # 3
    h.put(b"a", b"2")  # 4
    h.delete(b"a")  # 5
    h.txn(  # 6: two events in one revision
        pb.TxnRequest(
            success=[
                pb.RequestOp(request_put=pb.PutRequest(key=b"c", value=b"1")),
                pb.RequestOp(request_put=pb.PutRequest(key=b"b", value=b"2")),
            ]
        )
    )
    return h


def test_events_since_replays_in_revision_order(hist: Harness) -> None:
    events = hist.store.events_since(b"\x00", b"\x00", 2)
    assert summary(events) == [
        (PUT, b"a", 2, b"1"),
        (PUT, b"b", 3, b"1"),
        (PUT, b"a", 4, b"2"),
        (DELETE, b"a", 5, b""),
        (PUT, b"c", 6, b"1"),
        (PUT, b"b", 6, b"2"),
    ]
    # Revision 1 (the empty store's) holds nothing, so replaying from it is the same.
    assert hist.store.events_since(b"\x00", b"\x00", 1) == events
    assert summary(hist.store.events_since(b"a", b"", 4)) == [
        (PUT, b"a", 4, b"2"),
        (DELETE, b"a", 5, b""),
    ]
    assert hist.store.events_since(b"b", b"c", 7) == []


def test_replayed_events_match_live_events(hist: Harness) -> None:
    live = hist.commit(lambda b: hist.store.put(pb.PutRequest(key=b"a", value=b"3"), b)).events
    replayed = hist.store.events_since(b"a", b"", 7, prev_kv=True)
    assert replayed == live
    assert not replayed[0].HasField("prev_kv")  # a was deleted before: no previous value
    (ev,) = hist.store.events_since(b"b", b"", 6, prev_kv=True)
    assert ev.prev_kv.value == b"1" and ev.prev_kv.mod_revision == 3
    (tomb,) = hist.store.events_since(b"a", b"", 5, prev_kv=True)[:1]
    assert tomb.type == DELETE and tomb.prev_kv.value == b"2"


def test_max_events_does_not_split_a_revision(hist: Harness) -> None:
    events = hist.store.events_since(b"\x00", b"\x00", 5, max_events=2)
    assert [e.kv.mod_revision for e in events] == [5, 6, 6]


def test_events_since_compacted_revision_fails(hist: Harness) -> None:
    hist.compact(4)
    with pytest.raises(errors.CompactedError):
        hist.store.events_since(b"a", b"", 3)
    assert [e.kv.mod_revision for e in hist.store.events_since(b"\x00", b"\x00", 5)] == [5, 6, 6]


def test_lease_key_tracking(h: Harness) -> None:
    h.put(b"x", lease=1)
    h.put(b"y", lease=1)
    h.put(b"z", lease=2)
    assert h.store.keys_for_lease(1) == [b"x", b"y"]
    h.put(b"y", lease=2)  # moves y to lease 2
    h.put(b"z")  # detaches z
    h.delete(b"x")
    assert h.store.keys_for_lease(1) == []
    assert h.store.keys_for_lease(2) == [b"y"]
    assert h.store.leases() == [2]


def test_revoke_lease_deletes_keys_in_one_revision(h: Harness) -> None:
    base = h.store.revision
    h.put(b"k2", b"v", lease=9)
    h.put(b"k1", b"v", lease=9)
    h.put(b"other", b"v", lease=3)
    applied = h.commit(lambda b: h.store.revoke_lease(9, b))
    assert applied.response == [b"k1", b"k2"]
    assert applied.revision == base + 4 and h.store.revision == base + 4
    assert summary(applied.events) == [
        (DELETE, b"k1", base + 4, b""),
        (DELETE, b"k2", base + 4, b""),
    ]
    assert h.get(b"k", b"l").count == 0
    assert h.get(b"other").count == 1
    assert h.store.keys_for_lease(9) == []


def test_revoke_lease_without_keys_uses_no_revision(h: Harness) -> None:
    base = h.store.revision
    h.put(b"a")
    applied = h.commit(lambda b: h.store.revoke_lease(77, b))
    assert applied.response == [] and applied.events == [] and applied.revision == base + 1
