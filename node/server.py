"""The driver loop: joins the Raft core, storage, transport and the key-value state machine.

One asyncio task runs every turn in the same order (DESIGN.md, "How a write flows"):

1. step inbound Raft messages, tick from the monotonic clock;
2. propose every client write that arrived since the last turn in one batch (a leader
   whose last batch is not committed yet keeps them for the next: ``hold_for_commit``),
   and ask for one ReadIndex on behalf of every linearizable read waiting;
3. for each ``Ready``: send the leader's appends, make entries and hard state durable in one
   synced LevelDB write (in a worker thread, so the loop keeps accepting work), send the
   messages that had to wait for it, apply committed entries together with the applied index
   in one write batch, answer clients, release reads, ``advance``.

Nothing is acknowledged before it is durable, and a restart applies every entry once: the
applied index is written in the same batch as the changes it covers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import plyvel

from . import events, failpoints
from .config import NodeConfig
from .kv.requests import HEADER_SIZE, ID_SIZE
from .members import Member, decode_members, encode_members
from .proposals import APPEND_HOLD, PendingProposal, Waiters, hold_for_commit
from .raft.core import Config, InitialState, RaftCore, Role, catch_up
from .raft.errors import ProposalDropped
from .raft.types import (
    NONE,
    ConfChange,
    Entry,
    EntryType,
    Message,
    MessageType,
    Ready,
    SnapshotMeta,
)
from .storage.errors import WriteFailure
from .storage.writer import SyncWriter
from .transport.snapshot import Streamed

log = logging.getLogger("flotilla.node")

MEMBER_ATTRS = b"\xf1"
"""First byte of an entry that publishes a member's name and client URLs (not a KV request,
whose envelopes start with their format byte, 1)."""
ALARM = b"\xf2"
"""First byte of an entry that raises or clears an alarm (replicated, as in etcd)."""
ALARMS_KEY = b"c/alarms"
NOSPACE = 1
CORRUPT = 2
"""etcd's alarm types (``etcdserverpb.AlarmType``)."""
APPLIED_KEY = b"a/applied"
MEMBERS_KEY = b"c/members"
PROPOSAL_TIMEOUT = 5.0
READ_RETRY = 0.5
"""Seconds before a ReadIndex round that has not come back is joined by another (etcd: 500 ms)."""
COMMIT_ANNOUNCE_DELAY = 0.002
"""Seconds a leader lets a commit index wait for the next append before it sends it alone
to followers that wait for nothing (``RaftCore.commit_unannounced``). With one client
writing to the leader the next write's append goes out within this, so followers get one
message per write instead of two; an idle cluster's followers learn the index this late."""


class NodeUnavailable(Exception):
    """No leader, stopping, or a timeout: the client should retry (etcd: UNAVAILABLE)."""


@dataclass
class Stats:
    proposals_committed: int = 0
    proposals_failed: int = 0
    leader_changes: int = 0
    fsync_seconds: list[float] = field(default_factory=list)
    apply_seconds: list[float] = field(default_factory=list)
    peer_rtt_seconds: list[tuple[int, float]] = field(default_factory=list)
    snapshot_save_seconds: list[float] = field(default_factory=list)
    snapshot_install_seconds: list[float] = field(default_factory=list)


def is_fresh(db: Any, state: InitialState) -> bool:
    """Nothing of a cluster was ever written here: no vote, no log, no snapshot, no members.

    A data dir that has only its member list (a joining member stopped before it heard from
    the leader) is not fresh: it keeps the list it was given rather than asking again.
    """
    return (
        state.hard_state.term == 0
        and not state.entries
        and state.snapshot.index == 0
        and db.get(MEMBERS_KEY) is None
    )


class RaftNode:
    """The member's consensus machinery, independent of which client API sits on top."""

    def __init__(
        self,
        cfg: NodeConfig,
        db: plyvel.DB,
        storage: Any,
        state_machine: Any,
        transport_factory: Callable[[RaftNode], Any],
    ) -> None:
        self.cfg = cfg
        self.db = db
        self.storage = storage
        self.sm = state_machine
        self.member_id = cfg.member_id
        self.cluster_id = cfg.cluster_id
        self.waiters = Waiters(cfg.member_id, read_timeout=PROPOSAL_TIMEOUT)
        self.inbox: list[Message] = []
        self.stats = Stats()
        self.members: dict[int, Member] = {}
        self._wake = asyncio.Event()
        self._writer = SyncWriter()
        self._stopping = False
        self._last_lead = NONE
        self._last_role = Role.FOLLOWER
        self._slow_fsync = events.SlowFsync()
        self._read_seq = 0
        self._appended_at = 0.0  # loop time of the leader's last append of client proposals
        self._tick_seconds = cfg.heartbeat_interval_ms / 1000.0
        self._snapshotting = False
        # Held while a snapshot is saved and recorded, taken here or received from the
        # leader: the two write the same files and the same log record, and must not cross.
        self._snapshot_lock = asyncio.Lock()
        self._failure: WriteFailure | None = None
        self._commands: list[tuple[Callable[[RaftCore], object], asyncio.Future[object]]] = []
        self._applied_waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._heartbeats_sent: dict[tuple[int, int], float] = {}
        self._published_at = 0.0
        self._departed: dict[int, tuple[list[str], float]] = {}
        self.removed_at: float | None = None
        # When the driver loop last finished a turn (None: not started): what /livez reads.
        self._turned_at: float | None = None
        # The latest snapshot's metadata and the state machine fixed at its index, to be
        # serialized only when a member needs it (snapshot_for_peer). A snapshot of our own is
        # a record in the log and nothing else: the state machine is durable in the same
        # database, so compacting the log needs no copy of it (as in etcd).
        self._held_snapshot: tuple[SnapshotMeta, Any] | None = None
        self.core = self._load_core()
        self._hold_state_now()
        self._was_member = self.member_id in self.core.log.snapshot.conf.members()
        self.transport = transport_factory(self)

    # -- start-up ---------------------------------------------------------------------------

    def _load_core(self) -> RaftCore:
        raft_cfg = Config(
            self.member_id,
            election_tick=self.cfg.election_ticks,
            heartbeat_tick=1,
            pre_vote=True,
            check_quorum=True,
            lease_reads=self.cfg.leader_lease_reads,
        )
        state: InitialState = self.storage.load()
        applied_raw = self.db.get(APPLIED_KEY)
        applied = struct.unpack(">Q", applied_raw)[0] if applied_raw else 0
        if state.snapshot.index > applied:
            # Earlier versions recorded a snapshot from the leader in the log (its data in a
            # file) before the state machine installed it; a crash in between left the state
            # machine behind the log. Install it now, or the entries it covers would be lost.
            # (Now both are one write: see _install_snapshot.)
            loaded = self.storage.load_snapshot()
            assert loaded is not None
            meta, data = loaded
            self.sm.restore(data, [(APPLIED_KEY, struct.pack(">Q", meta.index))])
            applied = meta.index
            log.warning("installed snapshot %d that a crash interrupted", meta.index)
        raw_members = self.db.get(MEMBERS_KEY)
        if is_fresh(self.db, state):
            members = list(self.cfg.initial_cluster)
            batch = self.db.write_batch(sync=True)
            if self.cfg.initial_cluster_state == "new":
                # The founding configuration, recorded as the snapshot at index 0.
                state = InitialState.bootstrap(m.id for m in members)
                self.storage.record_snapshot(batch, state.snapshot)
            self._save_members(members, batch)
            batch.write()
            state.applied = 0
        else:
            members = decode_members(raw_members) if raw_members else []
            state.applied = applied
        self.members = {m.id: m for m in members}
        raw_alarms = self.db.get(ALARMS_KEY)
        self.alarms: set[tuple[int, int]] = (
            {(int(m), int(a)) for m, a in json.loads(raw_alarms)} if raw_alarms else set()
        )
        return RaftCore(raft_cfg, state)

    def _hold_state_now(self) -> None:
        """Move the snapshot to the state machine's index now, and hold that state.

        At start-up the state machine may be past the recorded snapshot, and the state held
        must match the index the snapshot names. Before LevelDB is compacted: the state held
        keeps on disk every record deleted after it (a compaction's, say), which a
        defragmentation is asked to give back.
        """
        core = self.core
        if core.log.snapshot.index == 0 or self._snapshotting:
            return  # no snapshot yet (no follower needs one), or one on its way
        meta = core.create_snapshot(core.applied)
        if meta != self.storage.snapshot:
            batch = self.db.write_batch(sync=True)
            self.storage.record_snapshot(batch, meta)
            batch.write()
        self._held_snapshot = (meta, self.sm.view())

    async def hold_state_now(self) -> None:
        """`_hold_state_now` between the driver's turns (before a defragmentation)."""
        await self.call_core(lambda _: self._hold_state_now())

    def snapshot_for_peer(self) -> tuple[SnapshotMeta, bytes | Streamed] | None:
        """The latest snapshot with its data, serialized as it is sent (in the transport's
        worker thread: the view is fixed, applies go on meanwhile)."""
        held = self._held_snapshot
        if held is None:
            loaded: tuple[SnapshotMeta, bytes] | None = self.storage.load_snapshot()
            return loaded
        meta, view = held
        size, pieces = self.sm.dump_stream(view)
        return meta, Streamed(size, _then_failpoint(pieces, "snapshot.after_dump"))

    def _save_members(self, members: list[Member], batch: Any = None) -> None:
        target = batch if batch is not None else self.db
        target.put(MEMBERS_KEY, encode_members(members))

    # -- client-facing entry points -------------------------------------------------------------

    async def propose(self, data: bytes, request_id: bytes) -> object:
        if self._stopping:
            raise NodeUnavailable("etcdserver: server stopped")
        fut: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        deadline = time.monotonic() + PROPOSAL_TIMEOUT
        self.waiters.queued.append(PendingProposal(request_id, data, fut, deadline))
        self._wake.set()
        return await fut

    async def read_barrier(self) -> None:
        if self._stopping:
            raise NodeUnavailable("etcdserver: server stopped")
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiters.reads_queued.append(fut)
        self._wake.set()
        await fut

    async def call_core(self, fn: Callable[[RaftCore], object]) -> object:
        """Run ``fn(core)`` at the start of the next turn (never between ready and advance)."""
        fut: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        self._commands.append((fn, fut))
        self._wake.set()
        return await fut

    async def wait_applied(self, index: int, timeout: float = PROPOSAL_TIMEOUT) -> None:
        if self.core.applied >= index:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._applied_waiters.append((index, fut))
        try:
            await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            raise NodeUnavailable("etcdserver: request timed out") from None

    async def wait_config_settled(self, timeout: float = PROPOSAL_TIMEOUT) -> None:
        """Wait until the configuration in effect is applied and not a joint one."""
        deadline = time.monotonic() + timeout
        while True:
            index = self.core.conf_index
            await self.wait_applied(index, max(0.0, deadline - time.monotonic()))
            if not self.core.conf.joint and self.core.conf_index == index:
                return
            await self.wait_applied(index + 1, max(0.0, deadline - time.monotonic()))

    async def wait_for_leader(self, target: int, timeout: float | None = None) -> None:
        """Wait until ``target`` is the leader known here (after a leadership transfer)."""
        limit = timeout if timeout is not None else 2 * self.cfg.election_timeout_ms / 1000
        deadline = time.monotonic() + limit
        while self.core.lead != target:
            if time.monotonic() >= deadline:
                raise NodeUnavailable(
                    "etcdserver: request timed out, leader transfer took too long"
                )
            await self.wait_applied(self.core.applied + 1, max(0.0, deadline - time.monotonic()))

    def wake(self) -> None:
        self._wake.set()

    def deliver(self, m: Message) -> None:
        """The transport hands over one inbound Raft message."""
        if m.type == MessageType.HEARTBEAT_RESP and self._heartbeats_sent:
            sent = self._heartbeats_sent.pop((m.frm, m.context), None)
            if sent is not None:
                self.stats.peer_rtt_seconds.append((m.frm, time.monotonic() - sent))
        self.inbox.append(m)
        self._wake.set()

    @property
    def is_leader(self) -> bool:
        return self.core.role == Role.LEADER

    @property
    def leader_id(self) -> int:
        return self.core.lead

    def stalled_for(self) -> float:
        """Seconds since the driver loop last finished a turn (0 before it starts).

        The loop turns at least once per heartbeat interval, leader or not, so a long gap
        means the process is stuck (a hung disk write, a blocked loop), never that the
        cluster lacks a leader.
        """
        if self._turned_at is None:
            return 0.0
        return max(0.0, time.monotonic() - self._turned_at)

    # -- the loop -------------------------------------------------------------------------------

    async def run(self) -> None:
        try:
            await self._drive()
        finally:
            self._writer.close()

    async def _drive(self) -> None:
        loop = asyncio.get_running_loop()
        next_tick = loop.time() + self._tick_seconds
        announce_at: float | None = None
        while not self._stopping:
            if self.removed_at is not None and self._removal_done():
                return
            if not self.core.commit_unannounced():
                announce_at = None  # an append carried it
            elif announce_at is None:
                announce_at = loop.time() + COMMIT_ANNOUNCE_DELAY
            if not self._wake.is_set():
                # A timer that sets the event, rather than wait_for: wait_for wraps the wait
                # in a new task every turn, and a member turns once per batch of messages.
                wake_at = next_tick if announce_at is None else min(next_tick, announce_at)
                if self.core.role == Role.LEADER and self._proposals_waiting():
                    wake_at = min(wake_at, self._appended_at + APPEND_HOLD)
                timer = loop.call_at(wake_at, self._wake.set)
                await self._wake.wait()
                timer.cancel()
            self._wake.clear()
            now = loop.time()
            if announce_at is not None and now >= announce_at:
                announce_at = None
                self.core.announce_commit()
            if now >= next_tick:
                missed = int((now - next_tick) / self._tick_seconds) + 1
                ticks, lost = catch_up(missed)
                for _ in range(ticks):
                    self.core.tick()
                if lost:
                    events.stood_still(self.core, now - next_tick)
                    self.core.forget_lease()
                    next_tick = now + self._tick_seconds
                else:
                    next_tick += missed * self._tick_seconds
            if self._failure is not None:
                raise self._failure
            try:
                await self._turn()
            except (plyvel.Error, OSError) as exc:
                raise self._write_failure(exc) from exc
            self._turned_at = time.monotonic()

    def _write_failure(self, exc: BaseException) -> WriteFailure:
        return WriteFailure(f"cannot write to the data directory {self.cfg.data_dir}: {exc}")

    async def _turn(self) -> None:
        core = self.core
        if self._commands:
            commands, self._commands = self._commands, []
            for fn, fut in commands:
                try:
                    result = fn(core)
                except Exception as exc:  # handed to the caller
                    if not fut.done():
                        fut.set_exception(exc)
                else:
                    if not fut.done():
                        fut.set_result(result)
        for report in self.transport.drain_reports():
            if report.kind.value == "unreachable":
                core.report_unreachable(report.member_id)
            else:
                core.report_snapshot(report.member_id, report.ok)
        # Decided as the turn starts, before its messages are stepped: when they commit the
        # last batch, what waits goes in the next turn, with the requests that arrive
        # meanwhile (clients answered in this turn come back with their next one).
        hold = self._holding()
        heartbeat = False  # answered in this turn's messages: a read request can ride along
        forwarded: list[Message] = []  # followers' proposals
        if self.inbox:
            inbox, self.inbox = self.inbox, []
            for m in inbox:
                if m.type == MessageType.PROP:
                    forwarded.append(m)
                    continue
                heartbeat = heartbeat or m.type == MessageType.HEARTBEAT
                core.step(m)
        if hold:
            self.inbox[:0] = forwarded
        else:
            self._append_proposals(forwarded)
        self._maybe_start_read_round(free_ride=heartbeat or core.role == Role.LEADER)
        while core.has_ready():
            await self._handle_ready(core.ready())
        if self.waiters.reads_queued and not self.waiters.reads:
            self._wake.set()  # a round came back with reads waiting: the next one at once
        self._note_leadership()
        self._maybe_publish()
        self.stats.proposals_failed += self.waiters.expire(
            time.monotonic(), NodeUnavailable("etcdserver: request timed out")
        )

    def _holding(self) -> bool:
        """Whether the leader keeps client proposals back for now (``hold_for_commit``)."""
        core = self.core
        return core.role == Role.LEADER and hold_for_commit(
            core.last_index() > core.commit,
            asyncio.get_running_loop().time() - self._appended_at,
        )

    def _proposals_waiting(self) -> bool:
        return bool(self.waiters.queued) or any(m.type == MessageType.PROP for m in self.inbox)

    def _append_proposals(self, forwarded: list[Message]) -> None:
        """Step the followers' proposals and propose this member's own."""
        core = self.core
        for m in forwarded:
            core.step(m)
        batch = self.waiters.take_queued()
        if batch:
            try:
                core.propose([p.data for p in batch])
            except ProposalDropped as exc:
                self.stats.proposals_failed += len(batch)
                for p in batch:
                    self.waiters.resolve(p.request_id, NodeUnavailable(f"etcdserver: {exc}"))
        if (forwarded or batch) and core.role == Role.LEADER:
            self._appended_at = asyncio.get_running_loop().time()

    def _maybe_start_read_round(self, free_ride: bool) -> None:
        now = time.monotonic()
        if not self.waiters.read_round_due(now, READ_RETRY, free_ride=free_ride):
            return
        self._read_seq += 1
        ctx = struct.pack(">QQ", self.member_id, self._read_seq)
        futs, self.waiters.reads_queued = self.waiters.reads_queued, []
        try:
            self.core.read_index(ctx)
            self.waiters.reads[ctx] = (now + PROPOSAL_TIMEOUT, futs)
        except ProposalDropped:
            for read in futs:
                if not read.done():
                    read.set_exception(NodeUnavailable("etcdserver: no leader"))

    async def _handle_ready(self, rd: Ready) -> None:
        if rd.snapshot is None:
            await self._persist_and_apply(rd)
        else:
            async with self._snapshot_lock:
                await self._persist_and_apply(rd)

    async def _persist_and_apply(self, rd: Ready) -> None:
        if rd.messages:
            self._note_heartbeats(rd.messages)
            self.transport.send(rd.messages)
        if rd.snapshot is not None:
            self._install_snapshot(rd)
        elif rd.entries or rd.hard_state is not None:
            batch = self.db.write_batch(sync=rd.must_sync)
            self.storage.stage(batch, rd)
            failpoints.hit("raft.before_log_write")
            if rd.must_sync:
                took = await self._writer.run(batch.write)
                self.stats.fsync_seconds.append(took)
                self._slow_fsync.observe(self.core, took, time.monotonic())
            else:
                # A moved commit index alone: no fsync, so no reason to leave the loop.
                batch.write()
            failpoints.hit("raft.after_log_write")
        if rd.messages_after_persist:
            self.transport.send(rd.messages_after_persist)
        if rd.committed_entries and (rd.messages or rd.messages_after_persist):
            # Let the peer streams write before applying: a follower waiting for this
            # commit index (its client's write) or this answer should not wait for the
            # apply too.
            await asyncio.sleep(0)
        if rd.committed_entries:
            started = time.perf_counter()
            self._apply(rd.committed_entries)
            self.stats.apply_seconds.append(time.perf_counter() - started)
        for rs in rd.read_states:
            self.waiters.release_reads(rs.contexts)
        self.core.advance(rd)
        if self._applied_waiters:
            applied = self.core.applied
            still = []
            for index, fut in self._applied_waiters:
                if index <= applied:
                    if not fut.done():
                        fut.set_result(None)
                else:
                    still.append((index, fut))
            self._applied_waiters = still
        self._maybe_snapshot()

    def _note_heartbeats(self, messages: list[Message]) -> None:
        """Remember when heartbeats left, to measure each peer's round trip."""
        now = time.monotonic()
        sent = self._heartbeats_sent
        for m in messages:
            if m.type == MessageType.HEARTBEAT:
                sent[(m.to, m.context)] = now
        if len(sent) > 4096:  # answers that never came: forget the oldest half
            for key in list(sent)[:2048]:
                del sent[key]

    def _apply(self, entries: list[Entry]) -> None:
        batch = self.db.write_batch()
        normal: list[tuple[int, bytes]] = []
        for e in entries:
            if e.type == EntryType.CONF_CHANGE:
                if normal:
                    self._apply_normal(normal, batch)
                    normal = []
                self._apply_conf(e, batch)
            elif e.data.startswith(MEMBER_ATTRS):
                self._apply_attrs(e.data[len(MEMBER_ATTRS) :], batch)
            elif e.data.startswith(ALARM):
                # Entries before an alarm are applied before it: the CORRUPT alarm stops
                # writes from its own index on, on every member alike.
                if normal:
                    self._apply_normal(normal, batch)
                    normal = []
                self._apply_alarm(e.data[len(ALARM) :], batch)
            elif e.data:
                normal.append((e.index, e.data))
        if normal:
            self._apply_normal(normal, batch)
        batch.put(APPLIED_KEY, struct.pack(">Q", entries[-1].index))
        failpoints.hit("raft.before_apply")
        batch.write()
        failpoints.hit("raft.after_apply")
        self.sm.batch_written()

    def _apply_normal(self, entries: list[tuple[int, bytes]], batch: Any) -> None:
        results = self.sm.apply(entries, batch)
        for request_id, result in results:
            self.waiters.resolve(request_id, result)
        self.stats.proposals_committed += len(entries)

    def _apply_conf(self, e: Entry, batch: Any) -> None:
        cc = ConfChange.decode(e.data)
        if cc.context:
            doc = json.loads(cc.context)
            for m in doc.get("add", []):
                member = Member.from_json(m)
                self.members[member.id] = member
            for rid in doc.get("remove", []):
                gone = self.members.pop(int(rid), None)
                if gone is not None:
                    # Keep talking to it for a while: the leader still sends it the log so
                    # that it learns of its removal (see RaftCore._switch_conf).
                    until = time.monotonic() + 4 * self.cfg.election_timeout_ms / 1000
                    self._departed[gone.id] = (list(gone.peer_urls), until)
                    asyncio.get_running_loop().call_later(
                        until - time.monotonic() + 0.1, self.update_peers
                    )
        conf = cc.conf
        events.membership_changed(self.core, conf, e.index)
        for mid, m in list(self.members.items()):
            learner = mid in conf.learners and not conf.is_voter(mid)
            if m.is_learner != learner:
                self.members[mid] = Member(m.id, m.name, m.peer_urls, m.client_urls, learner)
        self._save_members(list(self.members.values()), batch)
        self.update_peers()
        if self.member_id in conf.members():
            self._was_member = True
        elif self._was_member and self.removed_at is None:
            # (A member that joins replays configurations from before it was added: only
            # leaving one it belonged to is a removal.)
            self.removed_at = time.monotonic()
            log.warning("this member was removed from the cluster; it will stop")

    def update_peers(self) -> None:
        now = time.monotonic()
        self._departed = {mid: d for mid, d in self._departed.items() if d[1] > now}
        peers = {mid: urls for mid, (urls, _) in self._departed.items()}
        peers.update({mid: list(m.peer_urls) for mid, m in self.members.items()})
        peers.pop(self.member_id, None)
        self.transport.set_peers(peers)

    def _removal_done(self) -> bool:
        """A removed member lingers only while it still leads (handing over)."""
        assert self.removed_at is not None
        grace = 2 * self.cfg.election_timeout_ms / 1000
        return not self.is_leader or time.monotonic() - self.removed_at > grace

    def _apply_attrs(self, data: bytes, batch: Any) -> None:
        doc = json.loads(data)
        mid = int(doc["id"])
        m = self.members.get(mid)
        if m is None:
            return
        self.members[mid] = Member(
            mid,
            str(doc.get("name", m.name)),
            tuple(doc.get("peer_urls", m.peer_urls)),
            tuple(doc.get("client_urls", m.client_urls)),
            m.is_learner,
        )
        self._save_members(list(self.members.values()), batch)
        if "peer_urls" in doc:
            self.update_peers()
        rid = doc.get("rid")
        if rid:
            self.waiters.resolve(bytes.fromhex(rid), None)

    async def update_member_urls(self, member_id: int, peer_urls: list[str]) -> None:
        """MemberUpdate: new peer URLs for a member, through the log."""
        rid = self.waiters.new_request_id()
        doc = {"id": member_id, "peer_urls": peer_urls, "rid": rid.hex()}
        await self.propose(MEMBER_ATTRS + json.dumps(doc).encode(), rid)

    @property
    def corrupt(self) -> bool:
        """Whether the CORRUPT alarm is raised for any member."""
        return any(alarm == CORRUPT for _, alarm in self.alarms)

    def _apply_alarm(self, data: bytes, batch: Any) -> None:
        doc = json.loads(data)
        self.waiters.resolve(bytes.fromhex(doc["rid"]), None)
        alarm = (int(doc["member"]), int(doc["alarm"]))
        if doc["action"] == "activate":
            if alarm not in self.alarms:
                log.warning("alarm %d raised for member %x", alarm[1], alarm[0])
            self.alarms.add(alarm)
        elif doc.get("member") == 0:  # disarm this alarm type for every member
            self.alarms = {a for a in self.alarms if a[1] != alarm[1]}
        else:
            self.alarms.discard(alarm)
        batch.put(ALARMS_KEY, json.dumps(sorted(self.alarms)).encode())

    async def set_alarm(self, action: str, member: int, alarm: int) -> None:
        """Raise or clear an alarm for the whole cluster (through the log)."""
        rid = self.waiters.new_request_id()
        doc = {"action": action, "member": member, "alarm": alarm, "rid": rid.hex()}
        await self.propose(ALARM + json.dumps(doc).encode(), rid)

    def _maybe_publish(self) -> None:
        """Make our name and client URLs part of the replicated member list (as etcd does).

        A member added with ``member add`` is known only by its peer URLs until it starts;
        founding members know only each other's names. Retried at most once a second until
        the applied member list shows what this process was started with.
        """
        me = self.members.get(self.member_id)
        if me is None or self.core.lead == NONE:
            return
        want = (self.cfg.name, tuple(self.cfg.advertise_client_urls))
        if (me.name, me.client_urls) == want:
            return
        now = time.monotonic()
        if now - self._published_at < 1.0:
            return
        self._published_at = now
        doc = {"id": self.member_id, "name": want[0], "client_urls": list(want[1])}
        with contextlib.suppress(ProposalDropped):
            self.core.propose([MEMBER_ATTRS + json.dumps(doc).encode()])

    def _install_snapshot(self, rd: Ready) -> None:
        """Replace the state machine with the snapshot in ``rd``, in one synced write with
        the log's record of it (and the rest of what ``rd`` persists): a crash leaves both or
        neither, so the log never names a snapshot the state machine does not hold.

        All on the loop, write included: nothing reads the new state before it is durable.
        """
        snap = rd.snapshot
        assert snap is not None and snap.data is not None, "snapshots arrive with their data"
        started = time.perf_counter()
        failpoints.hit("snapshot.before_install")
        batch = self.db.write_batch(sync=True)
        self.storage.stage(batch, rd)
        applied = [(APPLIED_KEY, struct.pack(">Q", snap.meta.index))]
        # Read as it arrived, if the transport had our loader (see main.py).
        self.sm.stage_restore(batch, snap.data, applied, snap.loaded)
        failpoints.hit("raft.before_log_write")
        batch.write()
        self.sm.restored()
        failpoints.hit("snapshot.after_install")
        self._held_snapshot = (snap.meta, self.sm.view())
        raw = self.db.get(MEMBERS_KEY)
        if raw:
            self.members = {m.id: m for m in decode_members(raw)}
            self.update_peers()
        raw_alarms = self.db.get(ALARMS_KEY)
        self.alarms = {(int(m), int(a)) for m, a in json.loads(raw_alarms)} if raw_alarms else set()
        took = time.perf_counter() - started
        self.stats.snapshot_install_seconds.append(took)
        events.snapshot_installed(self.core, snap.meta.index, snap.meta.term, took)

    def _maybe_snapshot(self) -> None:
        core = self.core
        if self._snapshotting:
            return
        if core.applied - core.log.snapshot.index < self.cfg.snapshot_count:
            return
        self._snapshotting = True
        # Here, on the loop and between applies, the state machine is exactly at applied.
        meta = core.create_snapshot(core.applied)
        self._held_snapshot = (meta, self.sm.view())
        asyncio.get_running_loop().create_task(self._snapshot(meta))

    async def _snapshot(self, meta: SnapshotMeta) -> None:
        """Record the snapshot ``meta`` durably, then compact the log behind it."""
        started = time.perf_counter()
        try:
            async with self._snapshot_lock:
                if meta.index < self.core.log.snapshot.index:
                    # A snapshot from the leader was installed meanwhile; its record stands.
                    log.info("snapshot at %d abandoned: snapshot %d installed meanwhile",
                             meta.index, self.core.log.snapshot.index)  # fmt: skip
                    return
                upto = await self._save_snapshot(meta)
            took = time.perf_counter() - started
            self.stats.snapshot_save_seconds.append(took)
            events.snapshot_saved(self.core, meta.index, upto, took)
        except (plyvel.Error, OSError) as exc:
            # Off the loop, so hand it to the loop: the member stops as for a log write.
            self._failure = self._write_failure(exc)
            self._wake.set()
        finally:
            self._snapshotting = False

    async def _save_snapshot(self, meta: SnapshotMeta) -> int:
        """Record the snapshot at ``meta`` and compact the log behind it; returns the index
        the log was compacted to."""
        # One synced write: LevelDB's journal is sequential, so it also makes durable every
        # state machine write before it, which the compacted entries can no longer redo.
        batch = self.db.write_batch(sync=True)
        self.storage.record_snapshot(batch, meta)
        await asyncio.to_thread(_write_record, batch)
        # Keep some entries behind the snapshot so slightly slow followers need no snapshot.
        keep = min(5000, self.cfg.snapshot_count)
        upto = max(self.core.log.offset, meta.index - keep)
        if upto > self.core.log.offset:
            self.core.compact(upto)
            batch = self.db.write_batch()
            self.storage.compact(batch, upto)
            failpoints.hit("raftlog.before_compact")
            await asyncio.to_thread(batch.write)
            failpoints.hit("raftlog.after_compact")
        self.storage.purge_snapshots(keep=2)
        return upto

    def _note_leadership(self) -> None:
        if self.core.role != self._last_role:
            previous, self._last_role = self._last_role, self.core.role
            events.role_changed(self.core, previous.value)
        lead = self.core.lead
        if lead != self._last_lead:
            was_leader = self._last_lead == self.member_id
            self._last_lead = lead
            if lead != NONE:
                self.stats.leader_changes += 1
            events.leader_changed(self.core, lead)
            if lead == self.member_id:
                self.sm.on_leader(True)
            elif was_leader:
                self.sm.on_leader(False)
            if lead != NONE and self.waiters.proposals:
                self._fail_lost_proposals()

    def _fail_lost_proposals(self) -> None:
        """Fail at once the proposals a leader change lost, instead of at their timeout.

        A proposal this member forwarded to the old leader (or one a leader handing over
        dropped) is gone unless its entry reached our log; nobody will ever resolve it, and its
        client would wait for the full timeout. Those whose entry we hold may still commit
        under the new leader and keep waiting. A failed one may, rarely, still commit (the old
        leader had appended it and is re-elected): like a timeout, the error means "unknown".
        """
        log_ = self.core.log
        held: set[bytes] = set()
        if log_.last_index() > log_.applied:
            for e in log_.slice(log_.applied + 1, 1 << 62, 1 << 62):
                if e.type == EntryType.NORMAL:
                    held.add(e.data[HEADER_SIZE - ID_SIZE : HEADER_SIZE])
        lost = [rid for rid in self.waiters.proposals if rid not in held]
        for rid in lost:
            self.waiters.resolve(rid, NodeUnavailable("etcdserver: leader changed"))
        self.stats.proposals_failed += len(lost)

    # -- shutdown -------------------------------------------------------------------------------

    async def stop(self, hand_over: bool = True) -> None:
        """Stop accepting, hand leadership over if we hold it, flush, and stop the loop."""
        if hand_over and self.is_leader:
            best = max(
                (mid for mid in self.core.prs if mid != self.member_id),
                key=lambda mid: self.core.prs[mid].match,
                default=NONE,
            )
            if best != NONE:
                self.core.transfer_leader(best)
                self._wake.set()
                deadline = time.monotonic() + self.cfg.election_timeout_ms / 1000.0
                while self.is_leader and time.monotonic() < deadline:
                    await asyncio.sleep(self._tick_seconds / 2)
        self._stopping = True
        self._wake.set()
        self.waiters.fail_all(NodeUnavailable, "etcdserver: server stopped")


def _write_record(batch: Any) -> None:
    """Write a snapshot's record (in a worker thread)."""
    failpoints.hit("snapshot.before_save")
    batch.write()
    failpoints.hit("snapshot.after_save")


def _then_failpoint(pieces: Iterator[bytes], point: str) -> Iterator[bytes]:
    yield from pieces
    failpoints.hit(point)
