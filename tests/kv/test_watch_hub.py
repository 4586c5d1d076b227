"""The watch hub: replay, filters, prev_kv, progress, cancel, compaction, slow streams, scale."""

from __future__ import annotations

import time

import pytest
from machine import Machine

from flotilla.node.api.etcdpb import kv_pb2
from flotilla.node.api.etcdpb import rpc_pb2 as pb
from flotilla.node.kv.watch import PROGRESS_ALL_ID, WatchHub, WatchStream

PUT = kv_pb2.Event.PUT
DELETE = kv_pb2.Event.DELETE


def apply(m: Machine, hub: WatchHub, *reqs: object) -> None:
    out = m.apply(*reqs)
    hub.notify(out.events, out.revision)


def put(key: bytes, value: bytes = b"v", **kw: object) -> pb.PutRequest:
    return pb.PutRequest(key=key, value=value, **kw)  # type: ignore[arg-type]


def drain(stream: WatchStream) -> list[pb.WatchResponse]:
    out: list[pb.WatchResponse] = []
    while batch := stream.take(7):
        out.extend(batch)
    return out


def events(responses: list[pb.WatchResponse], watch_id: int | None = None) -> list[tuple]:
    return [
        (e.type, e.kv.key, e.kv.mod_revision)
        for r in responses
        if watch_id is None or r.watch_id == watch_id
        for e in r.events
    ]


def create(stream: WatchStream, key: bytes, range_end: bytes = b"", **kw: object) -> int:
    return stream.create(pb.WatchCreateRequest(key=key, range_end=range_end, **kw))  # type: ignore[arg-type]


@pytest.fixture
def hub(m: Machine) -> WatchHub:
    return WatchHub(m.store, progress_interval=10.0)


def test_created_then_live_events(m: Machine, hub: WatchHub) -> None:
    base = m.store.revision
    apply(m, hub, put(b"x"))
    wakes = []
    s = hub.open_stream(lambda: wakes.append(1))
    assert create(s, b"a") == 0
    assert create(s, b"p", b"q") == 1
    assert create(s, b"\0", b"\0", watch_id=7) == 7
    (c0, c1, c7) = drain(s)
    assert (c0.created, c0.watch_id, c0.header.revision) == (True, 0, base + 1)
    assert (c1.watch_id, c7.watch_id) == (1, 7)
    apply(m, hub, put(b"a"), put(b"pa"), put(b"b"), pb.DeleteRangeRequest(key=b"a"))
    got = drain(s)
    assert wakes
    assert events(got, 0) == [(PUT, b"a", base + 2), (DELETE, b"a", base + 5)]
    assert events(got, 1) == [(PUT, b"pa", base + 3)]
    assert events(got, 7) == [
        (PUT, b"a", base + 2),
        (PUT, b"pa", base + 3),
        (PUT, b"b", base + 4),
        (DELETE, b"a", base + 5),
    ]
    assert {r.header.revision for r in got} == {base + 5}


def test_replay_from_a_past_revision_then_live_without_duplicates(
    m: Machine, hub: WatchHub
) -> None:
    base = m.store.revision
    for i in range(5):
        apply(m, hub, put(b"k", str(i).encode()))
    s = hub.open_stream()
    create(s, b"k", start_revision=base + 3)
    got = drain(s)
    assert got[0].created
    assert events(got) == [(PUT, b"k", base + 3), (PUT, b"k", base + 4), (PUT, b"k", base + 5)]
    apply(m, hub, put(b"k"))
    assert events(drain(s)) == [(PUT, b"k", base + 6)]


def test_watch_from_revision_1_of_a_fresh_store(m: Machine, hub: WatchHub) -> None:
    """A fresh store is at revision 1 (as etcd's) and holds nothing there to replay."""
    s = hub.open_stream()
    create(s, b"k", start_revision=1)
    (created,) = drain(s)
    assert created.created and created.header.revision == 1
    apply(m, hub, put(b"k"))
    assert events(drain(s)) == [(PUT, b"k", 2)]


def test_future_start_revision_waits(m: Machine, hub: WatchHub) -> None:
    base = m.store.revision
    s = hub.open_stream()
    create(s, b"k", start_revision=base + 3)
    drain(s)
    for _ in range(4):
        apply(m, hub, put(b"k"))
    assert events(drain(s)) == [(PUT, b"k", base + 3), (PUT, b"k", base + 4)]


def test_filters_and_prev_kv(m: Machine, hub: WatchHub) -> None:
    base = m.store.revision
    s = hub.open_stream()
    no_put = create(s, b"k", filters=[pb.WatchCreateRequest.NOPUT])
    no_del = create(s, b"k", filters=[pb.WatchCreateRequest.NODELETE], prev_kv=True)
    plain = create(s, b"k")
    drain(s)
    apply(m, hub, put(b"k", b"1"), put(b"k", b"2"), pb.DeleteRangeRequest(key=b"k"))
    got = drain(s)
    assert events(got, no_put) == [(DELETE, b"k", base + 3)]
    assert events(got, no_del) == [(PUT, b"k", base + 1), (PUT, b"k", base + 2)]
    (r,) = [r for r in got if r.watch_id == no_del]
    assert not r.events[0].HasField("prev_kv")
    assert r.events[1].prev_kv.value == b"1"
    assert all(not e.HasField("prev_kv") for r in got if r.watch_id == plain for e in r.events)
    assert hub.needs_prev_kv


def test_cancel(m: Machine, hub: WatchHub) -> None:
    s = hub.open_stream()
    wid = create(s, b"k")
    drain(s)
    apply(m, hub, put(b"k"))
    assert s.cancel(wid)
    assert not s.cancel(wid)
    got = drain(s)
    # Events queued before the cancel are dropped; the cancel is confirmed.
    assert [(r.watch_id, r.canceled, len(r.events)) for r in got] == [(wid, True, 0)]
    apply(m, hub, put(b"k"))
    assert drain(s) == [] and hub.watcher_count == 0


def test_refused_creates(m: Machine, hub: WatchHub) -> None:
    s = hub.open_stream()
    create(s, b"k", watch_id=3)
    assert create(s, b"k", watch_id=3) == -1
    assert create(s, b"b", b"a") == -1
    got = drain(s)[1:]
    assert [(r.watch_id, r.created, r.canceled, r.cancel_reason) for r in got] == [
        (-1, True, True, "mvcc: duplicate watch ID provided on the WatchStream"),
        (-1, True, True, "mvcc: watcher range is empty"),
    ]


def test_compacted_start_revision_is_canceled_with_the_compact_revision(
    m: Machine, hub: WatchHub
) -> None:
    base = m.store.revision
    for _ in range(5):
        apply(m, hub, put(b"k"))
    apply(m, hub, pb.CompactionRequest(revision=base + 4))
    s = hub.open_stream()
    wid = create(s, b"k", start_revision=base + 2)
    created, canceled = drain(s)
    assert created.created and not created.canceled
    assert (canceled.watch_id, canceled.canceled, canceled.compact_revision) == (
        wid,
        True,
        base + 4,
    )
    assert hub.watcher_count == 0


def test_progress_notifications(m: Machine, hub: WatchHub) -> None:
    base = m.store.revision
    s = hub.open_stream()
    quiet = create(s, b"q", progress_notify=True)
    busy = create(s, b"b", progress_notify=True)
    create(s, b"n")
    drain(s)
    hub.tick(0.0)
    apply(m, hub, put(b"b"))
    drain(s)
    hub.tick(5.0)
    assert drain(s) == []
    hub.tick(10.0)
    got = drain(s)
    # Only the watcher that got no events in the interval hears about progress.
    assert [(r.watch_id, r.header.revision, len(r.events)) for r in got] == [(quiet, base + 1, 0)]
    hub.tick(20.0)
    assert sorted(r.watch_id for r in drain(s)) == sorted([quiet, busy])
    s.request_progress()
    (r,) = drain(s)
    assert (r.watch_id, r.header.revision, r.created, r.canceled) == (
        PROGRESS_ALL_ID,
        base + 1,
        False,
        False,
    )


def test_slow_stream_lags_then_catches_up_without_gaps(m: Machine) -> None:
    hub = WatchHub(m.store, max_pending=3, catch_up_events=4)
    base = m.store.revision
    slow = hub.open_stream()
    fast = hub.open_stream()
    sw = create(slow, b"k", b"l")
    fw = create(fast, b"k", b"l")
    drain(slow)
    drain(fast)
    fast_got = []
    for i in range(40):
        # Two revisions per apply, one key watched per revision.
        apply(m, hub, put(b"k%d" % i), put(b"z"))
        fast_got.extend(drain(fast))
        if i == 10:
            slow.request_progress()  # answered once the slow watcher is synced again
    assert slow.unsynced  # the apply path never waited for it
    assert slow.pending <= 3
    got = drain(slow)
    assert not slow.unsynced
    revs = [rev for _, _, rev in events(got, sw)]
    assert revs == [base + r for r in range(1, 80, 2)]
    assert [rev for _, _, rev in events(fast_got, fw)] == revs
    assert got[-1].watch_id == PROGRESS_ALL_ID
    # Back in sync: live events flow again, each once.
    apply(m, hub, put(b"k-again"))
    assert [rev for _, _, rev in events(drain(slow))] == [base + 81]


def test_lagging_watcher_is_canceled_if_history_is_compacted(m: Machine) -> None:
    hub = WatchHub(m.store, max_pending=1)
    base = m.store.revision
    s = hub.open_stream()
    wid = create(s, b"k")
    drain(s)
    for _ in range(5):
        apply(m, hub, put(b"k"))
    assert s.unsynced
    apply(m, hub, pb.CompactionRequest(revision=base + 4))
    got = drain(s)
    assert events(got) == [(PUT, b"k", base + 1)]
    assert (got[-1].watch_id, got[-1].canceled, got[-1].compact_revision) == (
        wid,
        True,
        base + 4,
    )


def test_tick_catches_up_streams_that_drained_elsewhere(m: Machine) -> None:
    hub = WatchHub(m.store, max_pending=1)
    base = m.store.revision
    s = hub.open_stream()
    create(s, b"k")
    drain(s)
    apply(m, hub, put(b"k"))
    apply(m, hub, put(b"k"))
    assert s.unsynced
    s.queue.popleft()
    s.pending -= 1
    hub.tick(0.0)
    assert not s.unsynced
    assert events(drain(s)) == [(PUT, b"k", base + 2)]


def test_a_lagging_stream_sends_one_response_per_watcher(m: Machine) -> None:
    # Three applies queued before the client reads: each watcher gets its events in one
    # response at the last revision, not three; never merged past a control response, nor
    # beyond the response size limit.
    hub = WatchHub(m.store, max_response_bytes=2000)
    base = m.store.revision
    s = hub.open_stream()
    a, b = create(s, b"a"), create(s, b"a", b"b")
    drain(s)
    for i in range(3):
        apply(m, hub, put(b"a", b"%d" % i))
    got = drain(s)
    assert [(r.watch_id, r.header.revision, len(r.events)) for r in got] == [
        (a, base + 3, 3),
        (b, base + 3, 3),
    ]
    assert events(got, a) == [(PUT, b"a", base + 1), (PUT, b"a", base + 2), (PUT, b"a", base + 3)]

    apply(m, hub, put(b"a"))
    s.request_progress()
    apply(m, hub, put(b"a"))
    got = drain(s)
    assert [(r.watch_id, r.header.revision, len(r.events)) for r in got] == [
        (a, base + 4, 1),
        (b, base + 4, 1),
        (PROGRESS_ALL_ID, base + 4, 0),
        (a, base + 5, 1),
        (b, base + 5, 1),
    ]

    for _ in range(8):  # about 300 bytes of events each: no more than six fit in 2000
        apply(m, hub, put(b"a", b"x" * 280))
    got = [r for r in s.take(100) if r.watch_id == a]
    assert [len(r.events) for r in got] == [6, 2]
    assert all(r.ByteSize() < 2000 for r in got)


def test_fragments(m: Machine) -> None:
    hub = WatchHub(m.store, max_response_bytes=2000)
    s = hub.open_stream()
    frag = create(s, b"k", b"l", fragment=True)
    whole = create(s, b"k", b"l")
    drain(s)
    apply(m, hub, *[put(b"k%d" % i, b"x" * 300) for i in range(20)])
    got = drain(s)
    parts = [r for r in got if r.watch_id == frag]
    assert len(parts) > 2
    assert all(r.fragment for r in parts[:-1]) and not parts[-1].fragment
    assert all(r.ByteSize() < 2000 for r in parts)
    assert events(parts) == events(got, whole)


def test_five_thousand_watchers_on_one_prefix_in_one_pass(m: Machine) -> None:
    hub = WatchHub(m.store)
    base = m.store.revision
    streams = [hub.open_stream() for _ in range(50)]
    for s in streams:
        for _ in range(100):
            create(s, b"/reg/", b"/reg0")
        drain(s)
    create(streams[0], b"/reg/pods/a")  # one exact-key watcher too
    drain(streams[0])
    assert hub.watcher_count == 5001
    out = m.apply(*[put(b"/reg/pods/%d" % i) for i in range(10)], put(b"/other"))
    t0 = time.perf_counter()
    hub.notify(out.events, out.revision)
    elapsed = time.perf_counter() - t0
    total = 0
    for s in streams:
        got = drain(s)
        assert len(got) == 100
        for r in got:
            assert [e.kv.mod_revision for e in r.events] == list(range(base + 1, base + 11))
        total += len(got)
    assert total == 5000
    assert elapsed < 1.0, elapsed


def test_watchers_replay_history_after_a_snapshot_restore(m: Machine, tmp_path) -> None:
    src = Machine(tmp_path / "src")
    try:
        base = m.store.revision
        assert src.store.revision == base
        hub = WatchHub(m.store)
        s = hub.open_stream()
        create(s, b"k")
        for i in range(6):
            src.apply(put(b"k", str(i).encode()))
        for i in range(2):
            apply(m, hub, put(b"k", str(i).encode()))
        assert events(drain(s)) == [(PUT, b"k", base + 1), (PUT, b"k", base + 2)]
        m.install_snapshot_of(src)
        hub.restored()
        assert events(drain(s)) == [(PUT, b"k", base + r) for r in (3, 4, 5, 6)]
        apply(m, hub, put(b"k"))
        assert events(drain(s)) == [(PUT, b"k", base + 7)]
    finally:
        src.close()


def test_a_future_start_revision_survives_a_restore_to_an_older_snapshot(
    m: Machine, tmp_path
) -> None:
    # A member behind takes a watch from a revision it has not reached, then installs a
    # snapshot still below it: the watch must not start early. It used to restart from
    # the snapshot's revision and deliver events from before its start (found by the fault
    # tests: a resumed watch replayed events the client had already seen).
    base = m.store.revision
    hub = WatchHub(m.store)
    s = hub.open_stream()
    create(s, b"k", start_revision=base + 5)
    drain(s)
    src = Machine(tmp_path / "src")
    try:
        for i in range(2):
            src.apply(put(b"k", str(i).encode()))
        m.install_snapshot_of(src)
    finally:
        src.close()
    hub.restored()
    assert m.store.revision == base + 2
    assert events(drain(s)) == []
    apply(m, hub, put(b"k"), put(b"k"), put(b"k"), put(b"k"))
    assert events(drain(s)) == [(PUT, b"k", base + 5), (PUT, b"k", base + 6)]


def test_watchers_that_lag_together_share_history_reads(m: Machine) -> None:
    hub = WatchHub(m.store, max_pending=100)
    base = m.store.revision
    s = hub.open_stream()
    ids = [create(s, b"/p/", b"/p0") for _ in range(1000)]
    drain(s)
    for i in range(3):
        apply(m, hub, put(b"/p/%d" % i))
    assert len(s.unsynced) == 1000  # the first 100 lag from the second apply on
    reads = []
    real = m.store.events_since

    def counting(*args, **kw):  # type: ignore[no-untyped-def]
        reads.append(args)
        return real(*args, **kw)

    m.store.events_since = counting  # type: ignore[method-assign]
    got = drain(s)
    assert not s.unsynced
    assert len(reads) <= 3
    per_watcher: dict[int, list[int]] = {}
    for r in got:
        per_watcher.setdefault(r.watch_id, []).extend(e.kv.mod_revision for e in r.events)
    assert per_watcher == {i: [base + 1, base + 2, base + 3] for i in ids}
