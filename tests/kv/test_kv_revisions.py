"""Revisions, versions and events across put, delete and re-create."""

from __future__ import annotations

from kvharness import Harness

from flotilla.node.api.etcdpb import kv_pb2
from flotilla.node.api.etcdpb import rpc_pb2 as pb
from flotilla.node.kv import codec


def test_empty_store(h: Harness) -> None:
    # As etcd's: an empty store is at revision 1, with nothing stored there.
    assert h.store.revision == 1
    resp = h.get(b"a")
    assert resp.header.revision == 1
    assert list(resp.kvs) == [] and resp.count == 0
    assert h.get(b"\x00", b"\x00", revision=1).count == 0


def test_first_change_gets_revision_2(h: Harness) -> None:
    assert h.put(b"a", b"1").header.revision == 2
    assert h.get(b"a", revision=1).count == 0
    assert h.get(b"a", revision=2).kvs[0].value == b"1"
    store = h.reopen()
    assert store.revision == 2


def test_empty_store_stays_at_revision_1_after_reopen(h: Harness) -> None:
    assert h.reopen().revision == 1
    assert h.put(b"a").header.revision == 2


def test_put_assigns_revisions_and_versions(h: Harness) -> None:
    base = h.store.revision
    assert h.put(b"a", b"1").header.revision == base + 1
    assert h.put(b"b", b"1").header.revision == base + 2
    assert h.put(b"a", b"2").header.revision == base + 3
    kv = h.get(b"a").kvs[0]
    assert (kv.create_revision, kv.mod_revision, kv.version, kv.value) == (
        base + 1,
        base + 3,
        2,
        b"2",
    )
    assert h.get(b"a").header.revision == base + 3


def test_delete_and_recreate_starts_new_generation(h: Harness) -> None:
    base = h.store.revision
    h.put(b"a", b"1")
    h.put(b"a", b"2")
    resp = h.delete(b"a")
    assert resp.deleted == 1 and resp.header.revision == base + 3
    assert h.get(b"a").count == 0
    h.put(b"a", b"3")
    kv = h.get(b"a").kvs[0]
    assert (kv.create_revision, kv.mod_revision, kv.version) == (base + 4, base + 4, 1)
    # The old generation is still readable at its revisions.
    old = h.get(b"a", revision=base + 2).kvs[0]
    assert (old.create_revision, old.mod_revision, old.version, old.value) == (
        base + 1,
        base + 2,
        2,
        b"2",
    )
    assert h.get(b"a", revision=base + 3).count == 0


def test_noop_delete_does_not_use_a_revision(h: Harness) -> None:
    base = h.store.revision
    h.put(b"a")
    resp = h.delete(b"zzz")
    assert resp.deleted == 0 and resp.header.revision == base + 1
    assert h.store.revision == base + 1


def test_delete_range_uses_one_revision_with_sub_revisions(h: Harness) -> None:
    base = h.store.revision
    for k in (b"a", b"b", b"c", b"d"):
        h.put(k, k)
    applied = h.commit(
        lambda b: h.store.delete_range(pb.DeleteRangeRequest(key=b"b", range_end=b"d"), b)
    )
    assert applied.revision == base + 5 and applied.response.deleted == 2
    assert [(e.type, e.kv.key, e.kv.mod_revision) for e in applied.events] == [
        (kv_pb2.Event.DELETE, b"b", base + 5),
        (kv_pb2.Event.DELETE, b"c", base + 5),
    ]
    assert h.store.revision == base + 5


def test_delete_prev_kv(h: Harness) -> None:
    h.put(b"a", b"1")
    h.put(b"b", b"2")
    resp = h.delete(b"a", b"\x00", prev_kv=True)
    assert [(kv.key, kv.value) for kv in resp.prev_kvs] == [(b"a", b"1"), (b"b", b"2")]
    assert resp.deleted == 2


def test_put_events_carry_prev_kv(h: Harness) -> None:
    base = h.store.revision
    first = h.commit(lambda b: h.store.put(pb.PutRequest(key=b"k", value=b"v1"), b))
    (ev,) = first.events
    assert ev.type == kv_pb2.Event.PUT and ev.kv.version == 1 and not ev.HasField("prev_kv")
    second = h.commit(lambda b: h.store.put(pb.PutRequest(key=b"k", value=b"v2"), b))
    (ev,) = second.events
    assert ev.kv.value == b"v2" and ev.prev_kv.value == b"v1" and ev.prev_kv.version == 1
    gone = h.commit(lambda b: h.store.delete_range(pb.DeleteRangeRequest(key=b"k"), b))
    (ev,) = gone.events
    assert ev.type == kv_pb2.Event.DELETE
    assert ev.kv.key == b"k" and ev.kv.mod_revision == base + 3 and ev.kv.version == 0
    assert ev.prev_kv.value == b"v2"


def test_events_without_prev_kv_when_disabled(h: Harness) -> None:
    h.store.events_prev_kv = False
    h.put(b"k", b"v1")
    applied = h.commit(lambda b: h.store.put(pb.PutRequest(key=b"k", value=b"v2"), b))
    assert not applied.events[0].HasField("prev_kv")


def test_reads_before_batch_is_written_see_the_apply(h: Harness) -> None:
    base = h.store.revision
    batch = h.db.write_batch()
    h.store.put(pb.PutRequest(key=b"a", value=b"1"), batch)
    h.store.put(pb.PutRequest(key=b"a", value=b"2", prev_kv=True), batch)
    assert h.get(b"a").kvs[0].value == b"2"
    assert h.db.get(b"kv/" + codec.rev_key(base + 1, 0)) is None
    batch.write()
    h.store.batch_written()
    assert h.get(b"a", revision=base + 1).kvs[0].value == b"1"
