"""A cluster of Raft cores joined by a simulated network, with disks that survive crashes.

Everything runs in one thread on a virtual clock, so a seed fixes the whole schedule. Each
member handles its ``Ready`` the way the real node does, in three phases that can be
interrupted by a crash: take the ready (the leader's appends leave at once), make it
durable (responses leave now), apply and advance. A crash loses whatever had not reached
the disk.

The same cluster serves the scripted scenario tests (which drive it by hand: ``stabilize``
delivers everything) and the randomized simulation in ``sim``.
"""

from __future__ import annotations

import heapq
import pickle
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from flotilla.node.raft.core import Config, InitialState, RaftCore, Role
from flotilla.node.raft.types import (
    Entry,
    HardState,
    Message,
    MessageType,
    Ready,
    Snapshot,
    SnapshotMeta,
)


class InvariantViolation(AssertionError):
    """A safety property of Raft does not hold."""


@dataclass
class StateMachine:
    """A tiny replicated state: which writes were applied, and a digest of the order."""

    applied: int = 0
    digest: int = 0
    writes: dict[bytes, int] = field(default_factory=dict)  # write id -> index applied at

    def apply(self, e: Entry) -> None:
        if e.index != self.applied + 1:
            raise InvariantViolation(f"applying {e.index} after {self.applied}")
        self.applied = e.index
        self.digest = hash((self.digest, e.term, e.data))
        if e.data and e.data not in self.writes and e.data.startswith(b"w"):
            self.writes[e.data] = e.index

    def dump(self) -> bytes:
        return pickle.dumps((self.applied, self.digest, self.writes))

    @staticmethod
    def load(data: bytes) -> StateMachine:
        applied, digest, writes = pickle.loads(data)
        return StateMachine(applied, digest, dict(writes))


@dataclass
class Disk:
    """What survives a crash: hard state, snapshot, log entries, the applied state."""

    hard_state: HardState = field(default_factory=HardState)
    snapshot: SnapshotMeta | None = None
    snapshot_data: bytes = b""
    entries: list[Entry] = field(default_factory=list)
    state: bytes = field(default_factory=lambda: StateMachine().dump())
    initial: InitialState | None = None
    unsynced: HardState | None = None
    """A hard state written without fsync (``Ready.must_sync`` false): lost by a crash
    unless a synced write follows it. The applied state is kept even so, the harder case
    for the core on restart (it applied entries its commit index no longer covers)."""

    def write(self, rd: Ready) -> None:
        if not rd.must_sync:
            if rd.entries or rd.snapshot is not None:
                raise InvariantViolation("entries or a snapshot in a write without fsync")
            if rd.hard_state is not None:
                if (rd.hard_state.term, rd.hard_state.vote) != (
                    self.hard_state.term,
                    self.hard_state.vote,
                ):
                    raise InvariantViolation("a new term or vote in a write without fsync")
                self.unsynced = rd.hard_state
            return
        if self.unsynced is not None:  # the fsync makes the earlier write durable too
            self.hard_state, self.unsynced = self.unsynced, None
        if rd.snapshot is not None:
            assert rd.snapshot.data is not None, "snapshot arrived without data"
            self.snapshot = rd.snapshot.meta
            self.snapshot_data = rd.snapshot.data
            self.entries = []
        if rd.entries:
            first = rd.entries[0].index
            base = self.entries[0].index if self.entries else first
            del self.entries[max(0, first - base) :]
            if self.entries and self.entries[-1].index != first - 1:
                raise InvariantViolation("disk log has a gap")
            self.entries.extend(rd.entries)
        if rd.hard_state is not None:
            self.hard_state = rd.hard_state

    def compact(self, index: int) -> None:
        if self.entries and self.entries[0].index <= index:
            del self.entries[: index - self.entries[0].index + 1]

    def initial_state(self) -> InitialState:
        assert self.initial is not None
        snap = self.snapshot if self.snapshot is not None else self.initial.snapshot
        sm = StateMachine.load(self.state)
        entries = [e for e in self.entries if e.index > snap.index]
        return InitialState(self.hard_state, snap, entries, sm.applied)


@dataclass
class PendingRead:
    context: bytes
    bound: int  # the highest index of any operation completed before this read began
    invoked: int


class Member:
    def __init__(self, cluster: Cluster, node_id: int, initial: InitialState) -> None:
        self.cluster = cluster
        self.id = node_id
        self.disk = Disk(initial=initial)
        self.core: RaftCore | None = None
        self.sm = StateMachine()
        self.inbox: list[Message] = []
        self.pending_ticks = 0
        self.ready: Ready | None = None
        self.phase = 0  # 1: ready taken, 2: durable
        self.waiting_writes: dict[bytes, int] = {}
        self.waiting_reads: dict[bytes, PendingRead] = {}
        self.last_commit = 0
        self.snapshot_every = 0
        self.keep_entries = 0
        self.start()

    @property
    def alive(self) -> bool:
        return self.core is not None

    def start(self) -> None:
        rng = random.Random(self.cluster.rng.random())
        self.sm = StateMachine.load(self.disk.state)
        snap = self.disk.snapshot
        if snap is not None and self.sm.applied < snap.index:
            # The snapshot reached the disk but the crash came before it was applied.
            self.sm = StateMachine.load(self.disk.snapshot_data)
            self.disk.state = self.disk.snapshot_data
        self.core = RaftCore(self.cluster.config_for(self.id), self.disk.initial_state(), rng)
        self.last_commit = self.core.commit
        self.inbox = []
        self.pending_ticks = 0
        self.ready = None
        self.phase = 0
        self.waiting_writes = {}
        self.waiting_reads = {}

    def crash(self) -> None:
        self.disk.unsynced = None
        self.core = None
        self.ready = None
        self.phase = 0
        self.inbox = []
        self.waiting_writes = {}
        self.waiting_reads = {}

    # -- the driver loop, one phase at a time ----------------------------------------------

    def run_phase(self) -> bool:
        """Do the next piece of work; False if there was nothing to do."""
        core = self.core
        if core is None:
            return False
        if self.phase == 1:
            self._persist()
            return True
        if self.phase == 2:
            self._apply_and_advance()
            return True
        worked = False
        if self.inbox:
            inbox, self.inbox = self.inbox, []
            for m in inbox:
                core.step(m)
            worked = True
        while self.pending_ticks:
            self.pending_ticks -= 1
            core.tick()
            worked = True
        self.cluster.observe(self)
        if not worked and core.commit_unannounced() and self.cluster.announce_now():
            # The driver's short timer: no append carried the commit index meanwhile.
            core.announce_commit()
        if core.has_ready():
            rd = core.ready()
            self.ready = rd
            self.phase = 1
            self.cluster.send(self.id, rd.messages)
            worked = True
        return worked

    def _persist(self) -> None:
        rd = self.ready
        assert rd is not None
        self.disk.write(rd)
        self.phase = 2
        self.cluster.send(self.id, rd.messages_after_persist)

    def _apply_and_advance(self) -> None:
        rd, core = self.ready, self.core
        assert rd is not None and core is not None
        cluster = self.cluster
        if rd.snapshot is not None:
            assert rd.snapshot.data is not None
            self.sm = StateMachine.load(rd.snapshot.data)
            cluster.check_snapshot(self, rd.snapshot.meta, self.sm)
        for e in rd.committed_entries:
            self.sm.apply(e)
            cluster.check_apply(self, e, self.sm.digest)
            invoked = self.waiting_writes.pop(e.data, None)
            if invoked is not None:
                cluster.ack_write(self, e, invoked)
        before = StateMachine.load(self.disk.state).applied
        if self.sm.applied < before:
            raise InvariantViolation(f"member {self.id}: applied went back {before}")
        self.disk.state = self.sm.dump()
        for rs in rd.read_states:
            if self.sm.applied < rs.index:
                raise InvariantViolation(
                    f"member {self.id}: read released at {rs.index} before apply "
                    f"({self.sm.applied})"
                )
            for ctx in rs.contexts:
                pending = self.waiting_reads.pop(ctx, None)
                if pending is not None:
                    cluster.complete_read(self, pending, rs.index)
        core.advance(rd)
        self.ready = None
        self.phase = 0
        self._maybe_snapshot()

    def _maybe_snapshot(self) -> None:
        core = self.core
        assert core is not None
        if not self.snapshot_every:
            return
        if core.applied - core.log.snapshot.index < self.snapshot_every:
            return
        meta = core.create_snapshot(core.applied)
        self.disk.snapshot = meta
        self.disk.snapshot_data = self.sm.dump()
        upto = max(core.log.offset, meta.index - self.keep_entries)
        core.compact(upto)
        self.disk.compact(upto)

    def drain(self) -> None:
        """Run phases until idle (used by the scripted scenarios)."""
        while self.run_phase():
            pass


class Network:
    """Messages in flight with delivery times; links can be cut one way or both."""

    def __init__(self) -> None:
        self.queue: list[tuple[int, int, Message]] = []
        self.seq = 0
        self.cut: set[tuple[int, int]] = set()
        self.drop_rate = 0.0
        self.dup_rate = 0.0
        self.min_delay = 1
        self.max_delay = 1

    def blocked(self, frm: int, to: int) -> bool:
        return (frm, to) in self.cut


class Cluster:
    def __init__(
        self,
        voters: int,
        spares: int = 0,
        seed: int = 0,
        config: Callable[[int], Config] | None = None,
        **config_overrides: object,
    ) -> None:
        self.rng = random.Random(seed)
        self.time = 0
        self.net = Network()
        self._config = config or (lambda i: Config(i, **config_overrides))  # type: ignore[arg-type]
        self.members: dict[int, Member] = {}
        initial = InitialState.bootstrap(range(1, voters + 1))
        for i in range(1, voters + 1):
            self.members[i] = Member(self, i, initial)
        for i in range(voters + 1, voters + spares + 1):
            self.members[i] = Member(self, i, InitialState())
        # Checker state.
        self.leaders: dict[int, int] = {}
        self.committed: dict[int, int] = {}  # index -> term, as any member reported it
        # index -> the lowest term in which a member saw it committed. Leader completeness
        # holds for entries committed in earlier terms only: a candidate that stood still
        # may win its old term late, after a newer leader committed more.
        self.committed_in: dict[int, int] = {}
        self.max_commit = 0
        self.applied_digest: dict[int, int] = {}
        self.completed_bound = 0
        self.acked: dict[bytes, int] = {}
        self.reads_checked = 0
        self.trace: list[str] | None = None
        self.announce_chance = 1.0
        """How likely an idle leader's delayed commit announcement fires at each chance: 1 in
        the scripted scenarios; the simulation lowers it, leaving followers to learn
        commits from later appends and heartbeats too."""

    def announce_now(self) -> bool:
        return self.announce_chance >= 1.0 or self.rng.random() < self.announce_chance

    def config_for(self, node_id: int) -> Config:
        return self._config(node_id)

    def __getitem__(self, node_id: int) -> RaftCore:
        core = self.members[node_id].core
        assert core is not None, f"member {node_id} is down"
        return core

    # -- network ----------------------------------------------------------------------------

    def send(self, frm: int, msgs: Iterable[Message]) -> None:
        net = self.net
        for m in msgs:
            if m.type == MessageType.SNAP and m.snapshot is not None:
                disk = self.members[frm].disk
                meta = disk.snapshot if disk.snapshot is not None else m.snapshot.meta
                m.snapshot = Snapshot(meta, disk.snapshot_data or StateMachine().dump())
            copies = 1
            if net.drop_rate and self.rng.random() < net.drop_rate:
                copies = 0
            elif net.dup_rate and self.rng.random() < net.dup_rate:
                copies = 2
            for _ in range(copies):
                delay = self.rng.randint(net.min_delay, net.max_delay)
                net.seq += 1
                heapq.heappush(net.queue, (self.time + delay, net.seq, m))

    def deliver_due(self) -> None:
        q = self.net.queue
        while q and q[0][0] <= self.time:
            _, _, m = heapq.heappop(q)
            self._deliver(m)

    def deliver_all(self) -> int:
        """Deliver every message in flight now, regardless of delay (scripted tests)."""
        q, self.net.queue = self.net.queue, []
        q.sort()
        for _, _, m in q:
            self._deliver(m)
        return len(q)

    def _deliver(self, m: Message) -> None:
        if self.net.blocked(m.frm, m.to):
            return
        target = self.members.get(m.to)
        if target is None or not target.alive:
            return
        if self.trace is not None:
            self.trace.append(f"t={self.time} {m}")
        target.inbox.append(m)

    def isolate(self, node_id: int) -> None:
        for other in self.members:
            if other != node_id:
                self.net.cut.add((node_id, other))
                self.net.cut.add((other, node_id))

    def partition(self, *groups: Iterable[int]) -> None:
        sets = [set(g) for g in groups]
        for a in self.members:
            for b in self.members:
                if a != b and not any(a in s and b in s for s in sets):
                    self.net.cut.add((a, b))

    def heal(self) -> None:
        self.net.cut.clear()

    # -- driving ----------------------------------------------------------------------------

    def stabilize(self, max_rounds: int = 1000) -> None:
        """Process and deliver until no member has work and no message is in flight."""
        for _ in range(max_rounds):
            busy = False
            for member in self.members.values():
                while member.run_phase():
                    busy = True
            if self.deliver_all():
                busy = True
            if not busy:
                return
        raise AssertionError("cluster did not stabilize")

    def tick(self, node_ids: Iterable[int] | None = None, n: int = 1) -> None:
        """Tick ``node_ids`` (default: all) ``n`` times, delivering everything in between."""
        ids = list(node_ids) if node_ids is not None else list(self.members)
        for _ in range(n):
            for i in ids:
                member = self.members[i]
                if member.alive:
                    member.pending_ticks += 1
            self.stabilize()

    def elect(self, node_id: int) -> None:
        self[node_id].campaign()
        self.stabilize()
        assert self[node_id].role == Role.LEADER, f"{node_id} did not win"

    def leader(self) -> int | None:
        best = None
        for m in self.members.values():
            core = m.core
            if (
                core is not None
                and core.role == Role.LEADER
                and (best is None or core.term > self[best].term)
            ):
                best = m.id
        return best

    def propose(self, node_id: int, data: bytes) -> None:
        """A client write through ``node_id``: acknowledged when that member applies it."""
        member = self.members[node_id]
        assert member.core is not None
        member.core.propose([data])
        member.waiting_writes[data] = self.time

    def read(self, node_id: int, context: bytes) -> None:
        member = self.members[node_id]
        assert member.core is not None
        member.core.read_index(context)
        member.waiting_reads[context] = PendingRead(context, self.completed_bound, self.time)

    def crash(self, node_id: int) -> None:
        self.members[node_id].crash()

    def restart(self, node_id: int) -> None:
        self.members[node_id].start()

    # -- checks -----------------------------------------------------------------------------

    def observe(self, member: Member) -> None:
        """Check what can be checked after a member took inputs."""
        core = member.core
        assert core is not None
        if core.role == Role.LEADER:
            prev = self.leaders.setdefault(core.term, member.id)
            if prev != member.id:
                raise InvariantViolation(f"two leaders in term {core.term}: {prev}, {member.id}")
            self._check_leader_completeness(member)
        commit = core.commit
        if commit < member.last_commit:
            raise InvariantViolation(
                f"member {member.id}: commit went back {member.last_commit} -> {commit}"
            )
        if commit > member.last_commit:
            log = core.log
            for i in range(max(member.last_commit + 1, log.first_index()), commit + 1):
                t = log.term(i)
                assert t is not None
                known = self.committed.setdefault(i, t)
                self.committed_in[i] = min(self.committed_in.get(i, core.term), core.term)
                if known != t:
                    raise InvariantViolation(
                        f"member {member.id} committed {i} at term {t}, others at term {known}"
                    )
            member.last_commit = commit
            self.max_commit = max(self.max_commit, commit)

    def _check_leader_completeness(self, member: Member) -> None:
        core = member.core
        assert core is not None
        log = core.log
        if getattr(member, "_checked_term", -1) == core.term:
            return
        member._checked_term = core.term  # type: ignore[attr-defined]
        for i in range(log.first_index(), self.max_commit + 1):
            if self.committed_in.get(i, core.term) >= core.term:
                continue
            t = log.term(i)
            if t != self.committed.get(i, t):
                raise InvariantViolation(
                    f"leader {member.id} of term {core.term} lacks committed entry {i}"
                )

    def check_apply(self, member: Member, e: Entry, digest: int) -> None:
        known = self.applied_digest.setdefault(e.index, digest)
        if known != digest:
            raise InvariantViolation(f"member {member.id} applied a different entry {e.index}")

    def check_snapshot(self, member: Member, meta: SnapshotMeta, sm: StateMachine) -> None:
        if sm.applied != meta.index:
            raise InvariantViolation(f"snapshot {meta.index} holds state at {sm.applied}")
        known = self.applied_digest.setdefault(meta.index, sm.digest)
        if known != sm.digest:
            raise InvariantViolation(f"member {member.id} installed a divergent snapshot")

    def ack_write(self, member: Member, e: Entry, invoked: int) -> None:
        self.acked[e.data] = e.index
        self.completed_bound = max(self.completed_bound, e.index)

    def complete_read(self, member: Member, pending: PendingRead, index: int) -> None:
        if index < pending.bound:
            raise InvariantViolation(
                f"stale read on {member.id}: read index {index} but an operation at "
                f"{pending.bound} completed before the read began"
            )
        self.reads_checked += 1
        self.completed_bound = max(self.completed_bound, member.sm.applied)

    def check_log_matching(self) -> None:
        live = [m.core for m in self.members.values() if m.core is not None]
        for i, a in enumerate(live):
            for b in live[i + 1 :]:
                lo = max(a.log.offset, b.log.offset)
                hi = min(a.log.last_index(), b.log.last_index())
                while hi > lo and a.log.term(hi) != b.log.term(hi):
                    hi -= 1
                if hi <= lo:
                    continue
                ea = a.log.entries[lo - a.log.offset : hi - a.log.offset]
                eb = b.log.entries[lo - b.log.offset : hi - b.log.offset]
                if ea != eb:
                    raise InvariantViolation(
                        f"log matching: {a.id} and {b.id} agree at {hi} but differ before"
                    )
