"""Three Raft cores joined by real storage and real transports, with a minimal driver.

Not the node's driver (that lives in ``node/server.py``): just enough of a loop to show
that the storage and transport APIs fit the core's ``Ready``/``advance`` contract, over
real LevelDB files and real gRPC: election, replication, a follower's restart from disk,
and its catch-up through a streamed snapshot after the leader compacted its log.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from pathlib import Path

import plyvel
from peers import CLUSTER, eventually, run

from flotilla.node.raft.core import Config, InitialState, RaftCore, Role
from flotilla.node.raft.types import EntryType, Message
from flotilla.node.storage import RaftStorage, ensure_identity
from flotilla.node.transport import ReportKind, Transport

IDS = (1, 2, 3)


class MiniNode:
    def __init__(self, member_id: int, data_dir: Path) -> None:
        self.id = member_id
        self.data_dir = data_dir
        self.port = 0
        self.state: list[bytes] = []
        self.snapshots_installed = 0

    async def start(self, peers: dict[int, list[str]] | None = None) -> None:
        self.db = plyvel.DB(str(self.data_dir / "db"), create_if_missing=True)
        ensure_identity(self.db, CLUSTER, self.id)
        self.storage = RaftStorage(self.db, self.data_dir / "snap")
        initial = self.storage.load()
        if initial.snapshot.index == 0 and not initial.entries:
            initial = InitialState.bootstrap(IDS)
            with self.db.write_batch(sync=True) as wb:
                self.storage.record_snapshot(wb, initial.snapshot)
        else:
            source = self.storage.load_snapshot()
            self.state = _decode(source[1]) if source else []
        self.core = RaftCore(Config(self.id), initial, random.Random(self.id))
        self.inbox: list[Message] = []
        self.wake = asyncio.Event()

        async def no_leases(lease_id: int) -> int:
            raise NotImplementedError

        self.transport = Transport(
            CLUSTER,
            self.id,
            self._deliver,
            no_leases,
            self.storage.load_snapshot,
            on_report=self.wake.set,
        )
        await self.transport.start(f"127.0.0.1:{self.port}")
        self.port = self.transport.port
        if peers is not None:
            self.transport.set_peers(peers)
        self.task = asyncio.get_running_loop().create_task(self._loop())

    def _deliver(self, m: Message) -> None:
        self.inbox.append(m)
        self.wake.set()

    async def stop(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        await self.transport.stop(grace=None)
        self.db.close()

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        next_tick = loop.time()
        core = self.core
        while True:
            # A timer rather than wait_for: on Python 3.11 wait_for can swallow a cancel
            # that arrives as the wait completes, and stop() then waited for this task until
            # the test's own timeout cancelled the test body.
            timer = loop.call_at(next_tick, self.wake.set)
            try:
                await self.wake.wait()
            finally:
                timer.cancel()
            self.wake.clear()
            inbox, self.inbox = self.inbox, []
            for m in inbox:
                core.step(m)
            for r in self.transport.drain_reports():
                if r.kind == ReportKind.UNREACHABLE:
                    core.report_unreachable(r.member_id)
                else:
                    core.report_snapshot(r.member_id, r.ok)
            if loop.time() >= next_tick:
                core.tick()
                next_tick = loop.time() + 0.02
            while core.has_ready():
                rd = core.ready()
                self.transport.send(rd.messages)
                if rd.snapshot is not None and rd.snapshot.data is not None:
                    self.storage.save_snapshot(rd.snapshot.meta, rd.snapshot.data)
                with self.db.write_batch(sync=True) as wb:
                    self.storage.stage(wb, rd)
                self.transport.send(rd.messages_after_persist)
                if rd.snapshot is not None and rd.snapshot.data is not None:
                    self.state = _decode(rd.snapshot.data)
                    self.snapshots_installed += 1
                for e in rd.committed_entries:
                    if e.type == EntryType.NORMAL and e.data:
                        self.state.append(e.data)
                core.advance(rd)

    def snapshot_and_compact(self) -> None:
        meta = self.core.create_snapshot(self.core.applied)
        self.storage.save_snapshot(meta, _encode(self.state))
        with self.db.write_batch(sync=True) as wb:
            self.storage.record_snapshot(wb, meta)
            self.storage.compact(wb, meta.index)
        self.core.compact(meta.index)


def _encode(state: list[bytes]) -> bytes:
    return b"\n".join(state)


def _decode(data: bytes) -> list[bytes]:
    return data.split(b"\n") if data else []


def _leader(nodes: dict[int, MiniNode]) -> MiniNode | None:
    leaders = [n for n in nodes.values() if n.core.role == Role.LEADER]
    return leaders[0] if len(leaders) == 1 else None


async def _propose(nodes: dict[int, MiniNode], first: int, n: int) -> None:
    await eventually(lambda: _leader(nodes) is not None, what="a leader")
    leader = _leader(nodes)
    assert leader is not None
    for i in range(first, first + n, 10):
        leader.core.propose([b"v%d" % j for j in range(i, min(i + 10, first + n))])
        leader.wake.set()
        await asyncio.sleep(0)


def test_replicate_restart_and_catch_up_by_snapshot(tmp_path: Path) -> None:
    async def body() -> None:
        nodes = {i: MiniNode(i, tmp_path / f"m{i}") for i in IDS}
        for n in nodes.values():
            (tmp_path / f"m{n.id}").mkdir()
            await n.start()
        peers = {i: [f"http://127.0.0.1:{n.port}"] for i, n in nodes.items()}
        for n in nodes.values():
            n.transport.set_peers(peers)

        want = [b"v%d" % j for j in range(100)]
        await _propose(nodes, 0, 100)
        await eventually(lambda: all(n.state == want for n in nodes.values()), 20, "replication")

        leader = _leader(nodes)
        assert leader is not None
        lagging = nodes[next(i for i in IDS if i != leader.id)]
        await lagging.stop()
        running = {i: n for i, n in nodes.items() if n is not lagging}
        want += [b"v%d" % j for j in range(100, 200)]
        await _propose(running, 100, 100)
        await eventually(lambda: all(n.state == want for n in running.values()), 20, "quorum")
        for n in running.values():
            n.snapshot_and_compact()
        # Appends the leader queued for the stopped member before compacting (its probes)
        # would still be delivered when it comes back and could catch it up without a
        # snapshot. Forget the peer and add it again: its new stream starts empty, so
        # whatever the leader sends it from now on comes from the compacted log.
        others = {i: urls for i, urls in peers.items() if i != lagging.id}
        for n in running.values():
            n.transport.set_peers(others)
            n.transport.set_peers(peers)

        await lagging.start(peers)  # same port, same data dir
        assert lagging.state == []  # it has no snapshot yet and re-applies from its log
        await eventually(lambda: lagging.state == want, 20, "catch-up by snapshot")
        assert lagging.snapshots_installed == 1
        assert lagging.storage.latest_snapshot_path() is not None

        want += [b"v%d" % j for j in range(200, 210)]
        await _propose(nodes, 200, 10)
        await eventually(lambda: all(n.state == want for n in nodes.values()), 20, "after")
        for n in nodes.values():
            await n.stop()

    run(body(), timeout=90)
