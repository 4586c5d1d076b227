"""Snapshots stream in chunks and are delivered only if their checksum matches."""

from __future__ import annotations

import hashlib
import os
import random
import threading
from collections.abc import Iterator

import grpc
import pytest
from peers import CLUSTER, Member, eventually, free_port, run

from flotilla.node.kv.errors import CorruptDataError
from flotilla.node.raft.types import ConfState, Message, MessageType, Snapshot, SnapshotMeta
from flotilla.node.transport import snapshot
from flotilla.node.transport.codec import to_pb
from flotilla.node.transport.pb import raftpeer_pb2 as pb
from flotilla.node.transport.pb import raftpeer_pb2_grpc as pb_grpc
from flotilla.node.transport.peer import Transport, grpc_target
from flotilla.node.transport.reports import Report, ReportKind

META = SnapshotMeta(1000, 7, ConfState(frozenset({1, 2, 3}), learners=frozenset({4})))
DATA = os.urandom(5 * (1 << 20) + 12345)


def msg_snap(to: int = 2, meta: SnapshotMeta = META) -> Message:
    return Message(MessageType.SNAP, to, 1, meta.term, snapshot=Snapshot(meta))


async def snapshot_reports(t: Transport, n: int = 1) -> list[Report]:
    reports: list[Report] = []

    def done() -> bool:
        reports.extend(r for r in t.drain_reports() if r.kind == ReportKind.SNAPSHOT)
        return len(reports) >= n

    await eventually(done, what="the snapshot report")
    return reports


def test_a_few_mib_arrive_whole_and_verified() -> None:
    async def body() -> None:
        a = await Member(1, snapshot=(META, DATA), snapshot_chunk_size=256 << 10).start()
        b = await Member(2).start()
        a.transport.set_peers({2: [b.url]})
        # The second MsgSnap finds a transfer to that peer running and is not sent again.
        a.transport.send([msg_snap(), msg_snap()])
        assert await snapshot_reports(a.transport) == [Report(ReportKind.SNAPSHOT, 2, True)]
        (m,) = b.got
        assert m.type == MessageType.SNAP and (m.frm, m.to, m.term) == (1, 2, 7)
        assert m.snapshot == Snapshot(META, DATA)
        await a.stop()
        await b.stop()

    run(body())


def test_heartbeats_overtake_a_snapshot_in_flight() -> None:
    async def body() -> None:
        a = await Member(1, snapshot=(META, DATA), snapshot_chunk_size=64 << 10).start()
        b = await Member(2).start()
        a.transport.set_peers({2: [b.url]})
        a.transport.send([msg_snap(), Message(MessageType.HEARTBEAT, 2, 1, 7)])
        await snapshot_reports(a.transport)
        assert [m.type for m in b.got] == [MessageType.HEARTBEAT, MessageType.SNAP]
        await a.stop()
        await b.stop()

    run(body())


def test_failures_are_reported() -> None:
    async def body() -> None:
        a = await Member(1, snapshot=None).start()
        b = await Member(2).start()
        a.transport.set_peers({2: [b.url], 3: [f"http://127.0.0.1:{free_port()}"]})
        a.transport.send([msg_snap(2)])  # nothing to send
        assert await snapshot_reports(a.transport) == [Report(ReportKind.SNAPSHOT, 2, False)]
        a.snapshot = (META, DATA)
        a.transport.send([msg_snap(3)])  # peer down
        assert await snapshot_reports(a.transport) == [Report(ReportKind.SNAPSHOT, 3, False)]
        a.transport.send([msg_snap(9)])  # unknown peer
        assert await snapshot_reports(a.transport) == [Report(ReportKind.SNAPSHOT, 9, False)]
        assert b.got == []
        await a.stop()
        await b.stop()

    run(body())


def _chunks(data: bytes = DATA) -> list[pb.SnapshotChunk]:
    return list(snapshot.chunks(CLUSTER, 1, to_pb(msg_snap()), data, 1 << 20))


def _one_chunk() -> pb.SnapshotChunk:
    """A whole snapshot in one chunk: a refusal at the first chunk cannot race the client's
    next write (which would turn the status the client sees into INTERNAL)."""
    (chunk,) = _chunks(b"small")
    return chunk


async def _send_raw(url: str, chunks: list[pb.SnapshotChunk]) -> grpc.aio.AioRpcError:
    async with grpc.aio.insecure_channel(grpc_target(url)) as channel:
        stub = pb_grpc.RaftPeerStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.SendSnapshot(iter(chunks))
        return err.value


@pytest.mark.parametrize("where", ["data", "checksum"])
def test_a_corrupted_chunk_is_refused(where: str) -> None:
    async def body() -> None:
        b = await Member(2).start()
        chunks = _chunks()
        assert len(chunks) == 6
        if where == "data":
            damaged = bytearray(chunks[2].data)
            damaged[777] ^= 0x04
            chunks[2].data = bytes(damaged)
        else:
            chunks[-1].checksum = bytes(32)
        err = await _send_raw(b.url, chunks)
        assert err.code() == grpc.StatusCode.DATA_LOSS
        assert "checksum mismatch" in (err.details() or "")
        assert b.got == []
        await b.stop()

    run(body())


def test_incomplete_or_headless_streams_are_refused() -> None:
    async def body() -> None:
        b = await Member(2).start()
        err = await _send_raw(b.url, _chunks()[:-1])
        assert err.code() == grpc.StatusCode.DATA_LOSS
        headless = _one_chunk()
        headless.ClearField("header")
        err = await _send_raw(b.url, [headless])
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
        wrong_type = _one_chunk()
        wrong_type.header.type = MessageType.APP
        err = await _send_raw(b.url, [wrong_type])
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
        foreign = _one_chunk()
        foreign.cluster_id = 0xBAD
        err = await _send_raw(b.url, [foreign])
        assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "cluster bad" in (err.details() or "")
        assert b.got == []
        await b.stop()

    run(body())


def test_an_empty_snapshot_is_one_chunk() -> None:
    (only,) = _chunks(b"")
    assert only.last and only.HasField("header") and len(only.checksum) == 32


@pytest.mark.parametrize("chunk_size", [1, 7, 1000, 4096])
def test_streamed_pieces_are_cut_into_whole_chunks(chunk_size: int) -> None:
    rng = random.Random(chunk_size)
    data = rng.randbytes(20_000)
    cuts = sorted(rng.sample(range(1, len(data)), 40))
    pieces = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
    pieces.insert(3, b"")  # an empty piece changes nothing
    streamed = snapshot.Streamed(len(data), iter(pieces))
    chunks = list(snapshot.chunks(CLUSTER, 1, to_pb(msg_snap()), streamed, chunk_size))
    assert b"".join(c.data for c in chunks) == data
    assert all(len(c.data) == chunk_size for c in chunks[:-1])
    assert [c.last for c in chunks] == [False] * (len(chunks) - 1) + [True]
    assert chunks[-1].checksum == hashlib.sha256(data).digest()
    assert chunks == list(snapshot.chunks(CLUSTER, 1, to_pb(msg_snap()), data, chunk_size))


@pytest.mark.parametrize("announced", [len(DATA) - 1, len(DATA) + 1])
def test_streamed_data_that_does_not_add_up_is_not_sent(announced: int) -> None:
    async def body() -> None:
        streamed = snapshot.Streamed(announced, iter([DATA[:1000], DATA[1000:]]))
        a = await Member(1, snapshot=(META, streamed)).start()
        b = await Member(2).start()
        a.transport.set_peers({2: [b.url]})
        a.transport.send([msg_snap()])
        assert await snapshot_reports(a.transport) == [Report(ReportKind.SNAPSHOT, 2, False)]
        assert b.got == []
        await a.stop()
        await b.stop()

    run(body())


class Recorder:
    """A sink that keeps what it is fed, refusing the piece numbered ``refuse`` if given."""

    made: list[Recorder] = []

    def __init__(self, refuse: int | None = None) -> None:
        self.fed: list[bytes] = []
        self.finished = 0
        self.refuse = refuse
        Recorder.made.append(self)

    def feed(self, data: bytes) -> None:
        if len(self.fed) == self.refuse:
            raise CorruptDataError("record 42 fails its checksum")
        self.fed.append(data)

    def finish(self) -> None:
        self.finished += 1


def test_a_streamed_snapshot_is_made_off_the_loop_and_read_as_it_arrives() -> None:
    async def body() -> None:
        loop_thread = threading.get_ident()
        made_in: set[int] = set()

        def pieces() -> Iterator[bytes]:
            for at in range(0, len(DATA), 100_000):
                made_in.add(threading.get_ident())
                yield DATA[at : at + 100_000]

        streamed = snapshot.Streamed(len(DATA), pieces())
        a = await Member(1, snapshot=(META, streamed), snapshot_chunk_size=256 << 10).start()
        Recorder.made.clear()
        b = await Member(2, snapshot_sink=Recorder).start()
        a.transport.set_peers({2: [b.url]})
        a.transport.send([msg_snap()])
        assert await snapshot_reports(a.transport) == [Report(ReportKind.SNAPSHOT, 2, True)]
        assert loop_thread not in made_in
        (m,) = b.got
        (sink,) = Recorder.made
        assert m.snapshot == Snapshot(META, b"") and m.snapshot.loaded is sink
        assert len(sink.fed) == len(DATA) // (256 << 10) + 1 and sink.finished == 1
        assert b"".join(sink.fed) == DATA
        await a.stop()
        await b.stop()

    run(body())


def test_a_snapshot_its_sink_refuses_is_refused_with_the_sinks_status() -> None:
    async def body() -> None:
        b = await Member(2, snapshot_sink=lambda: Recorder(refuse=2)).start()
        err = await _send_raw(b.url, _chunks())
        assert err.code() == grpc.StatusCode.DATA_LOSS
        details = err.details() or ""
        assert "fails its checksum" in details and "snapshot 7/1000 from member 1" in details
        assert b.got == []
        await b.stop()

    run(body())
