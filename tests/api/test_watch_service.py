"""The Watch service over real gRPC: one stream, many watches, etcd's response shapes."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator

import grpc
from member import MEMBER_ID, Served

from flotilla.node.api.etcdpb import kv_pb2, rpc_pb2_grpc
from flotilla.node.api.etcdpb import rpc_pb2 as pb

PUT = kv_pb2.Event.PUT
DELETE = kv_pb2.Event.DELETE


class Client:
    """A Watch stream driven from the test: send requests, receive responses with a timeout."""

    def __init__(self, stub: rpc_pb2_grpc.WatchStub) -> None:
        self._out: queue.Queue[pb.WatchRequest | None] = queue.Queue()
        self._in: queue.Queue[pb.WatchResponse] = queue.Queue()
        self._call = stub.Watch(self._requests())
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()

    def _requests(self) -> Iterator[pb.WatchRequest]:
        while (req := self._out.get()) is not None:
            yield req

    def _pump(self) -> None:
        try:
            for resp in self._call:
                self._in.put(resp)
        except grpc.RpcError:
            pass

    def send(self, req: pb.WatchRequest) -> None:
        self._out.put(req)

    def create(self, **kw: object) -> pb.WatchResponse:
        self.send(pb.WatchRequest(create_request=pb.WatchCreateRequest(**kw)))  # type: ignore[arg-type]
        return self.recv()

    def recv(self, timeout: float = 5.0) -> pb.WatchResponse:
        return self._in.get(timeout=timeout)

    def close(self) -> None:
        self._call.cancel()
        self._out.put(None)


def test_watch_put_delete_and_cancel(
    watch: rpc_pb2_grpc.WatchStub, kv: rpc_pb2_grpc.KVStub, served: Served
) -> None:
    base = served.revision()
    c = Client(watch)
    try:
        created = c.create(key=b"foo", prev_kv=True)
        assert created.created and created.watch_id == 0
        assert created.header.member_id == MEMBER_ID
        prefix = c.create(key=b"p/", range_end=b"p0")
        assert prefix.watch_id == 1
        kv.Put(pb.PutRequest(key=b"foo", value=b"1"))
        kv.Put(pb.PutRequest(key=b"p/x", value=b"2"))
        kv.Put(pb.PutRequest(key=b"foo", value=b"3"))
        kv.DeleteRange(pb.DeleteRangeRequest(key=b"foo"))
        got = [c.recv() for _ in range(4)]
        foo = [e for r in got if r.watch_id == 0 for e in r.events]
        assert [(e.type, e.kv.value, e.kv.mod_revision) for e in foo] == [
            (PUT, b"1", base + 1),
            (PUT, b"3", base + 3),
            (DELETE, b"", base + 4),
        ]
        assert foo[1].prev_kv.value == b"1" and foo[2].prev_kv.value == b"3"
        (p,) = [r for r in got if r.watch_id == 1]
        assert [e.kv.key for e in p.events] == [b"p/x"] and p.header.revision == base + 2
        c.send(pb.WatchRequest(cancel_request=pb.WatchCancelRequest(watch_id=0)))
        canceled = c.recv()
        assert (canceled.watch_id, canceled.canceled) == (0, True)
        kv.Put(pb.PutRequest(key=b"foo", value=b"after"))
        kv.Put(pb.PutRequest(key=b"p/y", value=b"after"))
        r = c.recv()
        assert r.watch_id == 1 and r.events[0].kv.key == b"p/y"
    finally:
        c.close()


def test_watch_history_progress_and_compaction(
    watch: rpc_pb2_grpc.WatchStub, kv: rpc_pb2_grpc.KVStub, served: Served
) -> None:
    base = served.revision()
    for i in range(5):
        kv.Put(pb.PutRequest(key=b"k", value=str(i).encode()))
    kv.Compact(pb.CompactionRequest(revision=base + 3))
    c = Client(watch)
    try:
        assert c.create(key=b"k", start_revision=base + 3).created
        r = c.recv()
        assert [e.kv.mod_revision for e in r.events] == [base + 3, base + 4, base + 5]
        c.send(pb.WatchRequest(progress_request=pb.WatchProgressRequest()))
        p = c.recv()
        assert (p.watch_id, p.header.revision, len(p.events)) == (-1, base + 5, 0)
        created = c.create(key=b"k", start_revision=1)
        assert created.created and created.watch_id == 1
        gone = c.recv()
        assert (gone.watch_id, gone.canceled, gone.compact_revision) == (1, True, base + 3)
    finally:
        c.close()


def test_closed_streams_release_their_watchers(
    watch: rpc_pb2_grpc.WatchStub, served: Served
) -> None:
    c = Client(watch)
    for _ in range(10):
        c.create(key=b"k")
    assert served.call(lambda: served.member.watch_hub.watcher_count) == 10
    c.close()
    for _ in range(50):
        if served.call(lambda: served.member.watch_hub.watcher_count) == 0:
            break
        threading.Event().wait(0.05)
    assert served.call(lambda: served.member.watch_hub.watcher_count) == 0


def test_a_client_that_stops_reading_lags_then_gets_every_event(tmp_path) -> None:  # type: ignore[no-untyped-def]
    served = Served(tmp_path / "slow", max_pending=8, catch_up_events=50)
    base = served.revision()
    # No window auto-tuning: a client that does not read must soon stop the server's writes.
    channel = grpc.insecure_channel(served.endpoint, options=[("grpc.http2.bdp_probe", 0)])
    try:
        kv = rpc_pb2_grpc.KVStub(channel)
        requests: queue.Queue[pb.WatchRequest | None] = queue.Queue()
        requests.put(
            pb.WatchRequest(create_request=pb.WatchCreateRequest(key=b"s/", range_end=b"s0"))
        )

        def gen() -> Iterator[pb.WatchRequest]:
            while (r := requests.get()) is not None:
                yield r

        call = rpc_pb2_grpc.WatchStub(channel).Watch(gen())
        assert next(call).created
        hub = served.member.watch_hub
        lagged = False
        n = 1000
        for i in range(n):
            kv.Put(pb.PutRequest(key=b"s/%d" % (i % 10), value=b"x" * 4096))
            if not lagged:
                lagged = served.call(lambda: any(s.unsynced for s in hub._streams))
        assert lagged  # the client's window filled up and the watcher fell behind
        revs: list[int] = []
        while len(revs) < n:
            revs.extend(e.kv.mod_revision for e in next(call).events)
        assert revs == list(range(base + 1, base + n + 1))
        call.cancel()
        requests.put(None)
    finally:
        channel.close()
        served.close()
