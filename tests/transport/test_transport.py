"""Two or more transports on loopback: order, isolation of dead peers, reconnect, identity."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import time
import zlib
from pathlib import Path
from typing import Any

import grpc
import pytest
from peers import CLUSTER, Member, eventually, free_port, heartbeats, run

from flotilla.node.kv.errors import LeaseNotFoundError, NoLeaderError, NotLeaderError
from flotilla.node.raft.types import Entry, Message, MessageType
from flotilla.node.transport.codec import seal
from flotilla.node.transport.pb import raftpeer_pb2 as pb
from flotilla.node.transport.pb import raftpeer_pb2_grpc as pb_grpc
from flotilla.node.transport.peer import UnknownPeerError, grpc_target
from flotilla.node.transport.renewals import NOT_FOUND
from flotilla.node.transport.reports import Report, ReportKind
from flotilla.node.transport.service import RaftPeerService


def commits(ms: list[Message]) -> list[int]:
    return [m.commit for m in ms]


def test_batches_arrive_in_order_both_ways() -> None:
    async def body() -> None:
        a, b = await Member(1).start(), await Member(2).start()
        a.transport.set_peers({1: [a.url], 2: [b.url]})
        b.transport.set_peers({1: [a.url], 2: [b.url]})
        for turn in range(50):
            a.transport.send(heartbeats(1, 2, turn * 40, 40))
            b.transport.send(heartbeats(2, 1, turn * 40, 40))
            if turn % 7 == 0:
                await eventually(lambda: len(b.got) > 0)
        await eventually(lambda: len(b.got) == 2000 and len(a.got) == 2000)
        assert commits(b.got) == list(range(2000))
        assert commits(a.got) == list(range(2000))
        assert all(m.frm == 1 and m.to == 2 for m in b.got)
        assert a.transport.drain_reports() == b.transport.drain_reports() == []
        await a.stop()
        await b.stop()

    run(body())


def test_large_appends_are_split_into_several_batches() -> None:
    async def body() -> None:
        a, b = await Member(1).start(), await Member(2).start()
        a.transport.set_peers({2: [b.url]})
        big = b"x" * (1 << 20)
        apps = [
            Message(MessageType.APP, 2, 1, 1, index=i, entries=[Entry(1, i + 1, big)])
            for i in range(12)
        ]
        a.transport.send(apps)
        await eventually(lambda: len(b.got) == 12)
        assert [m.index for m in b.got] == list(range(12))
        assert all(m.entries[0].data == big for m in b.got)
        await a.stop()
        await b.stop()

    run(body())


def test_a_dead_peer_neither_blocks_others_nor_grows_its_queue() -> None:
    async def body() -> None:
        a = await Member(1, max_queue_messages=100).start()
        b = await Member(2).start()
        dead = f"http://127.0.0.1:{free_port()}"
        a.transport.set_peers({2: [b.url], 3: [dead]})
        reports: list[Report] = []
        for turn in range(30):
            a.transport.send(heartbeats(1, 2, turn * 100, 100) + heartbeats(1, 3, 0, 100))
            assert a.transport.queued(3) <= 100
            reports += a.transport.drain_reports()
            await eventually(lambda t=turn: len(b.got) >= (t + 1) * 100)
        assert commits(b.got) == list(range(3000))
        assert Report(ReportKind.UNREACHABLE, 3, False) in reports
        assert all(r.member_id == 3 for r in reports)
        # Messages for a member nobody told us about are reported, not kept.
        a.transport.drain_reports()
        a.transport.send(heartbeats(1, 9, 0, 1))
        assert Report(ReportKind.UNREACHABLE, 9, False) in a.transport.drain_reports()
        await a.stop()
        await b.stop()

    run(body())


def test_reconnects_when_the_peer_comes_back() -> None:
    async def body() -> None:
        a, b = await Member(1).start(), await Member(2).start()
        port = b.transport.port
        a.transport.set_peers({2: [b.url]})
        a.transport.send(heartbeats(1, 2, 0, 1))
        await eventually(lambda: len(b.got) == 1)
        await b.stop()
        a.transport.send(heartbeats(1, 2, 1, 1))
        await eventually(
            lambda: ReportKind.UNREACHABLE in {r.kind for r in a.transport.drain_reports()},
            what="the stream to notice the peer is gone",
        )
        b2 = await Member(2).start(port)
        n = 100
        while not b2.got:  # a driver keeps sending heartbeats; one gets through eventually
            a.transport.send(heartbeats(1, 2, n, 1))
            n += 1
            await asyncio.sleep(0.05)
            assert n < 200, "no reconnect within 5 s"
        first = b2.got[0].commit
        a.transport.send(heartbeats(1, 2, n, 10))
        await eventually(lambda: b2.got[-1].commit == n + 9)
        assert commits(b2.got) == list(range(first, n + 10))
        await a.stop()
        await b2.stop()

    run(body())


NAME_MISSING_S = 11.0  # gRPC's own resolution backoff by then: 1, 1.6, 2.6, 4.1, 6.6 s


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root for a network namespace")
def test_a_peer_whose_name_resolves_late_is_reached_at_once() -> None:
    # A learner is added before its pod exists, and the pod's DNS record comes with the pod.
    # gRPC retries a failed resolution on the same channel after 1 s, 1.6 s, 2.6 s, ... up
    # to 2 minutes, so a stream that kept its channel reached the pod seconds to minutes late.
    ns = f"flt-name-{os.getpid()}"
    hosts = Path("/etc/netns") / ns / "hosts"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        hosts.parent.mkdir(parents=True, exist_ok=True)
        hosts.write_text("127.0.0.1 localhost\n")
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
        script = Path(__file__).with_name("late_name.py")
        proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, sys.executable, str(script), "late-peer"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdin is not None and proc.stdout is not None
        try:
            assert proc.stdout.readline().strip() == "sending"
            time.sleep(NAME_MISSING_S)  # the outage itself; nothing to await
            # In place: `ip netns exec` bind-mounted this very file over /etc/hosts.
            with hosts.open("a") as f:
                f.write("127.0.0.1 late-peer\n")
            proc.stdin.write("named\n")
            proc.stdin.flush()
            line = proc.stdout.readline().split()
            assert proc.wait(timeout=60) == 0
        finally:
            proc.kill()
            proc.wait()
        assert line and line[0] == "delivered", f"the stream never reached the peer: {line}"
        # Our own reconnect backoff tops out at 0.5 s; gRPC's next resolution would be
        # about 5 s away.
        assert float(line[1]) < 2.5, f"reached the peer {line[1]} s after its name resolved"
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)
        shutil.rmtree(hosts.parent, ignore_errors=True)


def test_changing_a_peer_url_moves_its_stream() -> None:
    async def body() -> None:
        a, b, b2 = await Member(1).start(), await Member(2).start(), await Member(2).start()
        a.transport.set_peers({2: [b.url]})
        a.transport.send(heartbeats(1, 2, 0, 3))
        await eventually(lambda: len(b.got) == 3)
        a.transport.set_peers({2: [b2.url]})
        a.transport.send(heartbeats(1, 2, 3, 3))
        await eventually(lambda: len(b2.got) == 3)
        assert commits(b2.got) == [3, 4, 5]
        a.transport.set_peers({})
        a.transport.send(heartbeats(1, 2, 6, 1))
        assert a.transport.drain_reports() == [Report(ReportKind.UNREACHABLE, 2, False)]
        for m in (a, b, b2):
            await m.stop()

    run(body())


def test_a_member_answers_a_sender_it_does_not_know_yet() -> None:
    # A member that missed the configuration change adding the leader still answers it:
    # the leader's stream says where answers go.
    async def body() -> None:
        port = free_port()
        leader = await Member(1, advertise_urls=[f"http://127.0.0.1:{port}"]).start(port)
        lagging = await Member(2).start()
        leader.transport.set_peers({2: [lagging.url]})
        leader.transport.send(heartbeats(1, 2, 0, 1))
        await eventually(lambda: len(lagging.got) == 1, what="the heartbeat")
        lagging.transport.send([Message(MessageType.HEARTBEAT_RESP, 1, 2, 1, commit=7)])
        await eventually(lambda: commits(leader.got) == [7], what="the answer to the leader")
        assert lagging.transport.drain_reports() == []

        # A sender that says nothing of where it listens cannot be answered: reported.
        mute = await Member(3).start()
        mute.transport.set_peers({2: [lagging.url]})
        mute.transport.send(heartbeats(3, 2, 0, 1))
        await eventually(lambda: len(lagging.got) == 2, what="the second heartbeat")
        lagging.transport.send([Message(MessageType.HEARTBEAT_RESP, 3, 2, 1)])
        assert lagging.transport.drain_reports() == [Report(ReportKind.UNREACHABLE, 3, False)]

        # The member list, once learned, decides as usual.
        lagging.transport.set_peers({})
        lagging.transport.send([Message(MessageType.HEARTBEAT_RESP, 1, 2, 1, commit=8)])
        assert lagging.transport.drain_reports() == [Report(ReportKind.UNREACHABLE, 1, False)]

    run(body())


def test_another_cluster_is_refused() -> None:
    async def body() -> None:
        b = await Member(2).start()
        stranger = await Member(1, cluster_id=0xBAD).start()
        stranger.transport.set_peers({2: [b.url]})
        stranger.transport.send(heartbeats(1, 2, 0, 5))
        await eventually(
            lambda: stranger.transport.drain_reports() != [], what="the refusal to be noticed"
        )
        assert b.got == []
        async with grpc.aio.insecure_channel(grpc_target(b.url)) as channel:
            stub = pb_grpc.RaftPeerStub(channel)
            batch = seal(0xBAD, 1, [Message(MessageType.HEARTBEAT, 2, 1)])
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.Send(iter([batch]))
            assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert "cluster bad" in err.value.details()
            assert f"cluster {CLUSTER:x}" in err.value.details()
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.LeaseRenew(pb.LeaseRenewRequest(cluster_id=0xBAD, lease_id=1))
            assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.LeaseRenewBatch(
                    pb.LeaseRenewBatchRequest(cluster_id=0xBAD, lease_ids=[1])
                )
            assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.LeaseRemaining(pb.LeaseRenewRequest(cluster_id=0xBAD, lease_id=1))
            assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert b.got == []
        await b.stop()
        await stranger.stop()

    run(body())


def test_undecodable_batch_is_refused_whole() -> None:
    async def body() -> None:
        b = await Member(2).start()
        async with grpc.aio.insecure_channel(grpc_target(b.url)) as channel:
            stub = pb_grpc.RaftPeerStub(channel)
            good = pb.RaftMessage(type=MessageType.HEARTBEAT, to=2, frm=1)
            inner = pb.RaftMessages(messages=[good, pb.RaftMessage(type=99, to=2)])
            payload = inner.SerializeToString()
            batch = pb.MessageBatch(
                cluster_id=CLUSTER, from_id=1, payload=payload, crc=zlib.crc32(payload)
            )
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.Send(iter([batch]))
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert b.got == []
        await b.stop()

    run(body())


def test_damaged_batch_is_refused_whole_and_the_next_stream_delivers() -> None:
    async def body() -> None:
        b = await Member(2).start()
        beats = heartbeats(1, 2, 0, 3)
        async with grpc.aio.insecure_channel(grpc_target(b.url)) as channel:
            stub = pb_grpc.RaftPeerStub(channel)
            batch = seal(CLUSTER, 1, beats)
            damaged = bytearray(batch.payload)
            damaged[len(damaged) // 2] ^= 0x08
            bad = pb.MessageBatch(
                cluster_id=CLUSTER, from_id=1, payload=bytes(damaged), crc=batch.crc
            )
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.Send(iter([batch, bad, batch]))
            assert err.value.code() == grpc.StatusCode.DATA_LOSS
            assert "checksum" in err.value.details(), err.value.details()
            # The batch before the damaged one was delivered; nothing after it was.
            assert commits(b.got) == commits(beats)
            summary = await stub.Send(iter([batch]))
            assert summary.messages == len(beats)
        assert commits(b.got) == commits(beats) * 2
        await b.stop()

    run(body())


def test_lease_renew_reaches_the_leader() -> None:
    async def body() -> None:
        async def renew(lease_id: int) -> int:
            if lease_id == 404:
                raise LeaseNotFoundError()
            if lease_id == 503:
                raise NoLeaderError()
            return lease_id + 30

        leader = await Member(1, lease_renew=renew).start()
        follower = await Member(2).start()
        follower.transport.set_peers({1: [leader.url]})
        assert await follower.transport.lease_renew(1, 7) == 37
        assert await follower.transport.lease_renew(1, 404) == NOT_FOUND
        # Many at once share calls, and each gets its own lease's answer.
        ids = [404 if i % 10 == 0 else i for i in range(1, 301)]
        got = await asyncio.gather(*(follower.transport.lease_renew(1, i) for i in ids))
        assert got == [NOT_FOUND if i == 404 else i + 30 for i in ids]
        # An error that is not about one lease is every keep-alive's answer in that call.
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await follower.transport.lease_renew(1, 503)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        assert err.value.details() == "etcdserver: no leader"
        with pytest.raises(UnknownPeerError):
            await follower.transport.lease_renew(3, 7)
        await leader.stop()
        await follower.stop()

    run(body())


def test_a_leases_time_left_comes_from_the_leaders_clock() -> None:
    async def body() -> None:
        def remaining(lease_id: int) -> int:
            if lease_id == 503:
                raise NotLeaderError()
            return NOT_FOUND if lease_id == 404 else 17

        leader = await Member(1, on_lease_remaining=remaining).start()
        # A member that cannot say: what a leader of an earlier version answers.
        earlier = await Member(3).start()
        follower = await Member(2).start()
        follower.transport.set_peers({1: [leader.url], 3: [earlier.url]})
        assert await follower.transport.lease_remaining(1, 7) == 17
        assert await follower.transport.lease_remaining(1, 404) == NOT_FOUND
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await follower.transport.lease_remaining(1, 503)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        assert err.value.details() == "etcdserver: not leader"
        assert await follower.transport.lease_remaining(3, 7) is None
        with pytest.raises(UnknownPeerError):
            await follower.transport.lease_remaining(4, 7)
        for m in (leader, earlier, follower):
            await m.stop()

    run(body())


def test_lease_renew_to_a_leader_without_batches_goes_one_lease_per_call() -> None:
    """A leader of the version before LeaseRenewBatch (a rolling upgrade) answers
    UNIMPLEMENTED; its followers' keep-alives still get through, one call each."""

    async def body() -> None:
        renewed: list[int] = []

        async def renew(lease_id: int) -> int:
            renewed.append(lease_id)
            if lease_id == 404:
                raise LeaseNotFoundError()
            return 60

        class EarlierLeader(RaftPeerService):
            async def LeaseRenewBatch(self, request: object, context: Any) -> None:
                # What a server of that version answers: the method is not registered.
                await context.abort(grpc.StatusCode.UNIMPLEMENTED, "Method not found!")

        server = grpc.aio.server()
        pb_grpc.add_RaftPeerServicer_to_server(
            EarlierLeader(CLUSTER, 1, lambda m: None, renew), server
        )
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        follower = await Member(2).start()
        follower.transport.set_peers({1: [f"http://127.0.0.1:{port}"]})
        got = await asyncio.gather(*(follower.transport.lease_renew(1, i) for i in (5, 404, 6)))
        assert got == [60, NOT_FOUND, 60]
        assert sorted(renewed) == [5, 6, 404]
        await server.stop(None)
        await follower.stop()

    run(body())


@pytest.mark.parametrize(
    ("url", "target"),
    [
        ("http://127.0.0.1:2380", "127.0.0.1:2380"),
        ("127.0.0.1:2380", "127.0.0.1:2380"),
        ("http://[::1]:2380", "[::1]:2380"),
        ("http://node-0.peers.default.svc:2380", "node-0.peers.default.svc:2380"),
        ("https://node-0.peers.default.svc:2380", "node-0.peers.default.svc:2380"),
    ],
)
def test_peer_urls(url: str, target: str) -> None:
    assert grpc_target(url) == target


@pytest.mark.parametrize("url", ["ftp://a:1", "http://a", "unix:///x"])
def test_bad_peer_urls(url: str) -> None:
    with pytest.raises(ValueError):
        grpc_target(url)


def test_reports_wake_the_driver() -> None:
    async def body() -> None:
        wakeups: list[None] = []
        a = await Member(1, on_report=lambda: wakeups.append(None)).start()
        a.transport.send(heartbeats(1, 5, 0, 3))
        assert len(wakeups) == 1  # deduplicated until drained
        assert a.transport.drain_reports() == [Report(ReportKind.UNREACHABLE, 5, False)]
        a.transport.send(heartbeats(1, 5, 3, 1))
        assert len(wakeups) == 2
        await a.stop()

    run(body())


def test_a_peer_hash_call_cut_by_a_reconnect_fails_as_unavailable() -> None:
    """A peer's stream replaces its channel when it reconnects, which cancels the calls
    still out on the old one. grpc.aio raises CancelledError for them, which the caller (the
    leader's periodic corruption check) took for its own cancellation and ended silently."""

    async def body() -> None:
        asked = asyncio.Event()
        release = asyncio.Event()

        async def slow_hash(revision: int, applied_index: int) -> pb.PeerHashResponse:
            asked.set()
            await release.wait()
            return pb.PeerHashResponse(hash=1, hash_revision=revision, revision=revision)

        peer = await Member(2, on_hash=slow_hash).start()
        me = await Member(1).start()
        me.transport.set_peers({2: [peer.url]})
        call = asyncio.ensure_future(me.transport.peer_hash(2, 5, 0, timeout=10))
        await asyncio.wait_for(asked.wait(), 5)
        await me.transport._peers[2]._reopen()  # what a reconnect does
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        release.set()
        # The new channel answers, and the member's own hash reaches the caller whole.
        resp = await me.transport.peer_hash(2, 7, 0, timeout=10)
        assert (resp.member_id, resp.hash, resp.hash_revision) == (2, 1, 7)
        # A cancelled caller is still cancelled.
        release.clear()
        asked.clear()
        call = asyncio.ensure_future(me.transport.peer_hash(2, 5, 0, timeout=10))
        await asyncio.wait_for(asked.wait(), 5)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        release.set()
        await me.stop()
        await peer.stop()

    run(body())
