"""RaftCore: the consensus state machine of one member, with no I/O of its own.

Inputs are ``tick()``, ``step(message)``, ``propose(...)``, ``propose_conf_change(...)``,
``read_index(ctx)`` and ``transfer_leader(to)``. Output is a ``Ready`` — what to persist, send,
apply and serve — which the caller acknowledges with ``advance(ready)``. Randomness comes from
the injected generator, time from ``tick()``: the same inputs give the same outputs, which is
what lets the simulation in ``tests/raft`` explore thousands of schedules.

The structure follows etcd-io/raft: one step function per role, per-follower progress in
``progress``, quorum arithmetic in ``quorum``, configuration transitions in ``membership``.
Configuration changes take effect when they are applied, as in etcd; a member does not
campaign while a committed change is still unapplied.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from . import quorum
from .errors import ConfChangeRejected, NotLeader, ProposalDropped, RaftInvariantError
from .log import RaftLog
from .membership import next_conf
from .progress import Progress, ProgressState
from .reads import PendingRead, ReadRounds, ReleaseQueue
from .types import (
    CAMPAIGN_TRANSFER,
    COMMIT_ONLY,
    EMPTY_CONF,
    NONE,
    ConfChange,
    ConfState,
    Entry,
    EntryType,
    HardState,
    Message,
    MessageType,
    Ready,
    Snapshot,
    SnapshotMeta,
)

MT = MessageType


class Role(enum.Enum):
    FOLLOWER = "follower"
    PRE_CANDIDATE = "pre-candidate"
    CANDIDATE = "candidate"
    LEADER = "leader"


# A driver that missed more tick deadlines than this (its process stood still, or a turn
# ran long) ticks once instead of catching up: a burst of ticks would only start elections.
MAX_CATCH_UP_TICKS = 11


def catch_up(missed: int) -> tuple[int, bool]:
    """How a driver makes up for ``missed`` tick deadlines: (ticks to run, time lost).

    When time is lost the ticks no longer count the time that passed, so a lease measured in
    them says nothing; the driver then calls ``forget_lease``.
    """
    if missed > MAX_CATCH_UP_TICKS:
        return 1, True
    return missed, False


# Messages that depend on nothing this member has yet to persist may leave at once; the
# leader's appends in particular go out while its own write is in flight (§10.2.1).
_SEND_AT_ONCE = frozenset(
    {
        MT.APP,
        MT.HEARTBEAT,
        MT.SNAP,
        MT.TIMEOUT_NOW,
        MT.PROP,
        MT.READ_INDEX,
        MT.READ_INDEX_RESP,
        MT.TRANSFER_LEADER,
        MT.PRE_VOTE,
    }
)


@dataclass(frozen=True, slots=True)
class Config:
    id: int
    election_tick: int = 10
    heartbeat_tick: int = 1
    pre_vote: bool = True
    check_quorum: bool = True
    lease_reads: bool = False
    max_msg_bytes: int = 1 << 20
    max_msg_entries: int = 8192
    max_inflight_msgs: int = 256
    max_inflight_bytes: int = 64 << 20
    max_apply_bytes: int = 64 << 20
    snapshot_retry_ticks: int = 0  # 0: twice the election timeout

    def __post_init__(self) -> None:
        if self.id == NONE:
            raise ValueError("member id 0 is reserved")
        if self.heartbeat_tick < 1 or self.election_tick <= self.heartbeat_tick:
            raise ValueError("need 1 <= heartbeat_tick < election_tick")


@dataclass(slots=True)
class InitialState:
    """What the member had on disk: hard state, latest snapshot, the entries after it.

    ``applied`` is where the application's state machine stands; it is durable together
    with that state (never behind the snapshot).
    """

    hard_state: HardState = field(default_factory=HardState)
    snapshot: SnapshotMeta = field(default_factory=lambda: SnapshotMeta(0, 0, EMPTY_CONF))
    entries: list[Entry] = field(default_factory=list)
    applied: int | None = None

    @staticmethod
    def bootstrap(voters: Iterable[int], learners: Iterable[int] = ()) -> InitialState:
        """The state of every founding member of a new cluster."""
        conf = ConfState(frozenset(voters), frozenset(), frozenset(learners))
        return InitialState(snapshot=SnapshotMeta(0, 0, conf))


class RaftCore:
    def __init__(
        self, config: Config, state: InitialState, rng: random.Random | None = None
    ) -> None:
        self.cfg = config
        self.id = config.id
        self.rng = rng if rng is not None else random.Random(config.id)
        hs = state.hard_state
        snap = state.snapshot
        applied = state.applied if state.applied is not None else snap.index
        self.log = RaftLog(snap, state.entries, max(hs.commit, applied), applied)
        self.term = hs.term
        self.vote = hs.vote
        self.lead = NONE
        self.role = Role.FOLLOWER
        self._persisted_hs = hs

        # The configuration in effect is the latest one in the log, committed or not.
        self.conf = snap.conf
        self._conf_history: list[tuple[int, ConfState]] = [(snap.index, snap.conf)]
        self.prs: dict[int, Progress] = {}
        self._track_conf(self.log.first_index())

        self.ticks = 0
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.randomized_timeout = self.cfg.election_tick
        self.lease_ticks = (
            self.cfg.election_tick - 2 if self.cfg.lease_reads and self.cfg.check_quorum else 0
        )
        # A restarted member stays out of elections for one election timeout: it may have
        # acknowledged a leader's lease just before it went down, and forgot when. This holds
        # whether or not the member itself uses lease reads, since the leader's flag is what
        # counts and members change it one at a time. A member that never had a term never
        # acknowledged anything, so a new cluster elects at once.
        self._quiet_ticks = self.cfg.election_tick if self.cfg.check_quorum and hs.term else 0

        self.votes: dict[int, bool] = {}
        self._departing: dict[int, int] = {}  # removed member -> tick until which it hears
        self.lead_transferee = NONE
        self.reads = ReadRounds()
        self.released = ReleaseQueue()
        self._reads_awaiting_term_commit: list[tuple[int, tuple[bytes, ...]]] = []
        self._lease_forbidden = False
        self._commit_news = False
        self._append_news = False
        self._forwarded_read: Message | None = None

        self.msgs: list[Message] = []
        self._reset_randomized_timeout()

    # == queries ===============================================================================

    @property
    def commit(self) -> int:
        return self.log.committed

    @property
    def applied(self) -> int:
        return self.log.applied

    def last_index(self) -> int:
        return self.log.last_index()

    def hard_state(self) -> HardState:
        return HardState(self.term, self.vote, self.log.committed)

    @property
    def conf_index(self) -> int:
        """Index of the log entry that installed the configuration in effect."""
        return self._conf_history[-1][0]

    def is_promotable(self) -> bool:
        """May this member campaign?

        Voters may. So may a voter of the previous configuration that the latest one left
        out: it can hold entries (C_new itself among them) that no remaining voter has, and
        if it could not lead for a moment — long enough to replicate them and hand over —
        the remaining voters might never win an election.
        """
        if self.conf.is_voter(self.id):
            return True
        hist = self._conf_history
        return len(hist) > 1 and hist[-2][1].is_voter(self.id)

    def has_lease(self) -> bool:
        return (
            self.role == Role.LEADER
            and self.lease_ticks > 0
            and not self._lease_forbidden
            and self.lead_transferee == NONE
            and self.ticks < self.reads.lease_until
        )

    def forget_lease(self) -> None:
        """The driver lost time its ticks do not count (the process stood still for longer
        than it catches up on). A lease is measured in ticks, so it may have run out while
        the count stood still, and no round started before the pause may grant one either:
        reads take a heartbeat round until a round started after it is confirmed."""
        self.reads.revoke_lease()

    # == inputs ================================================================================

    def tick(self) -> None:
        self.ticks += 1
        if self._quiet_ticks:
            self._quiet_ticks -= 1
        if self.role == Role.LEADER:
            self._tick_leader()
        else:
            self._tick_election()

    def campaign(self) -> None:
        """Start an election now (as an elapsed election timeout would)."""
        if self.role != Role.LEADER:
            self._hup(transfer=False)

    def propose(self, datas: Sequence[bytes]) -> int:
        """Propose entries; returns the last index on the leader, 0 when forwarded."""
        if self.role == Role.LEADER:
            self._check_accepting()
            return self._append(datas, EntryType.NORMAL)
        if self.lead == NONE:
            raise ProposalDropped("no leader")
        ents = [Entry(0, 0, d) for d in datas]
        self.msgs.append(Message(MT.PROP, self.lead, self.id, 0, entries=ents))
        return 0

    def propose_conf_change(
        self, voters: Iterable[int], learners: Iterable[int] = (), context: bytes = b""
    ) -> int:
        """Move to the target voters and learners; returns the index of the change entry.

        Only the leader takes configuration changes, one at a time.
        """
        if self.role != Role.LEADER:
            raise NotLeader(self.lead)
        self._check_accepting()
        if self._conf_history[-1][0] > self.log.committed:
            raise ConfChangeRejected("another configuration change is in progress", retriable=True)
        target = next_conf(self.conf, voters, learners)
        return self._propose_conf(ConfChange(target, context))

    def read_index(self, context: bytes) -> None:
        """Ask for a linearizable read; it comes back in a later ``Ready.read_states``."""
        if self.role == Role.LEADER:
            self._leader_read(self.id, (context,))
            return
        if self.lead == NONE:
            raise ProposalDropped("no leader")
        fwd = self._forwarded_read
        if fwd is not None and fwd.to == self.lead:
            fwd.reads += (context,)
            return
        fwd = Message(MT.READ_INDEX, self.lead, self.id, 0, reads=(context,))
        self._forwarded_read = fwd
        self.msgs.append(fwd)

    def transfer_leader(self, to: int) -> None:
        if self.role == Role.LEADER:
            self._leader_transfer(to)
        elif self.lead != NONE:
            self.msgs.append(Message(MT.TRANSFER_LEADER, self.lead, self.id, 0, context=to))
        else:
            raise ProposalDropped("no leader")

    def report_unreachable(self, to: int) -> None:
        pr = self.prs.get(to)
        if pr is not None and pr.state == ProgressState.REPLICATE:
            pr.become_probe()

    def report_snapshot(self, to: int, ok: bool) -> None:
        """The transport finished (or gave up) sending a snapshot to ``to``."""
        pr = self.prs.get(to)
        if pr is None or pr.state != ProgressState.SNAPSHOT:
            return
        if not ok:
            pr.pending_snapshot = 0
        pr.become_probe()
        # Wait for the next heartbeat response before probing again.
        pr.paused = True

    def create_snapshot(self, index: int) -> SnapshotMeta:
        """Record that the application saved a snapshot of its state at ``index``."""
        if index > self.log.applied:
            raise RaftInvariantError(f"snapshot at {index} beyond applied {self.log.applied}")
        if index <= self.log.snapshot.index:
            return self.log.snapshot
        term = self.log.term(index)
        if term is None:
            raise RaftInvariantError(f"snapshot at {index}: entry compacted")
        conf = self._conf_at(index)
        meta = SnapshotMeta(index, term, conf)
        self.log.snapshot = meta
        return meta

    def compact(self, index: int) -> None:
        """Drop log entries up to ``index`` (covered by the latest snapshot)."""
        self.log.compact(index)
        hist = self._conf_history
        keep = 0
        for i, (at, _) in enumerate(hist):
            if at <= index:
                keep = i
        del hist[:keep]

    def step(self, m: Message) -> None:
        if m.term == 0:
            pass  # forwarded requests carry no term
        elif m.term > self.term:
            if m.type in (MT.VOTE, MT.PRE_VOTE):
                force = m.context == CAMPAIGN_TRANSFER
                in_lease = self.cfg.check_quorum and (
                    self._quiet_ticks > 0
                    or (self.lead != NONE and self.election_elapsed < self.cfg.election_tick)
                )
                if in_lease and not force:
                    # A live leader exists as far as we know: don't help unseat it.
                    return
            if m.type == MT.PRE_VOTE or (m.type == MT.PRE_VOTE_RESP and not m.reject):
                pass  # pre-votes never change terms
            elif m.type in (MT.APP, MT.HEARTBEAT, MT.SNAP):
                self._become_follower(m.term, m.frm)
            else:
                self._become_follower(m.term, NONE)
        elif m.term < self.term:
            if (self.cfg.check_quorum or self.cfg.pre_vote) and m.type in (MT.HEARTBEAT, MT.APP):
                # A deposed leader that can't hear the new one: our term tells it to step
                # down (its pre-votes would otherwise never win and it would never learn).
                self._send(MT.APP_RESP, m.frm)
            elif m.type == MT.PRE_VOTE:
                self._send(MT.PRE_VOTE_RESP, m.frm, reject=True)
            elif m.type == MT.VOTE:
                # The paper's rule (5.1): a stale request is rejected with our term. Ignored,
                # a candidate that we never send to (its configuration is not ours) learns
                # our term only when its own catches up, and without pre-vote two such
                # candidates can take turns unseating each other for a long time.
                self._send(MT.VOTE_RESP, m.frm, reject=True)
            return

        if m.type in (MT.VOTE, MT.PRE_VOTE):
            self._handle_vote_request(m)
        elif self.role == Role.LEADER:
            self._step_leader(m)
        elif self.role == Role.FOLLOWER:
            self._step_follower(m)
        else:
            self._step_candidate(m)

    # == output ================================================================================

    def has_ready(self) -> bool:
        log = self.log
        return bool(
            self.msgs
            or self._commit_news
            or self._append_news
            or log.stable < log.last_index()
            or log.pending_snapshot is not None
            or self.hard_state() != self._persisted_hs
            or log.has_next_committed()
            or self.released.ready(log.applied)
        )

    def ready(self) -> Ready:
        if self._append_news:
            self._broadcast_append()
        if self._commit_news:
            self._announce_commit(defer=True)
        log = self.log
        rd = Ready()
        hs = self.hard_state()
        was = self._persisted_hs
        if hs != was:
            rd.hard_state = hs
            self._persisted_hs = hs
        rd.entries = log.unstable_entries()
        rd.snapshot = log.pending_snapshot
        rd.must_sync = bool(
            rd.entries or rd.snapshot is not None or hs.term != was.term or hs.vote != was.vote
        )
        rd.committed_entries = log.next_committed(self.cfg.max_apply_bytes)
        if rd.committed_entries:
            applied_after = rd.committed_entries[-1].index
        elif rd.snapshot is not None:
            applied_after = rd.snapshot.meta.index
        else:
            applied_after = log.applied
        rd.read_states = self.released.release(applied_after)
        for m in self.msgs:
            if m.type in _SEND_AT_ONCE:
                rd.messages.append(m)
            else:
                rd.messages_after_persist.append(m)
        self.msgs = []
        self.reads.open = False
        self._forwarded_read = None
        return rd

    def advance(self, rd: Ready) -> None:
        log = self.log
        if rd.snapshot is not None:
            meta = rd.snapshot.meta
            if log.pending_snapshot is rd.snapshot:
                log.pending_snapshot = None
            if meta.index > log.applied:
                log.applied = meta.index
        if rd.entries:
            last = rd.entries[-1]
            log.stable_to(last.index, last.term)
        if rd.committed_entries:
            log.applied_to(rd.committed_entries[-1].index)
        if self.role == Role.LEADER:
            me = self.prs.get(self.id)
            if me is not None and me.maybe_update(log.stable):
                self._maybe_commit()

    # == roles =================================================================================

    def _reset(self, term: int) -> None:
        if term != self.term:
            self.term = term
            self.vote = NONE
        self.lead = NONE
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self._reset_randomized_timeout()
        self.lead_transferee = NONE
        self.votes = {}
        self.prs = {}
        self._departing = {}
        self.reads = ReadRounds()
        self._reads_awaiting_term_commit = []
        self._lease_forbidden = False
        self._commit_news = False
        self._append_news = False

    def _reset_randomized_timeout(self) -> None:
        e = self.cfg.election_tick
        self.randomized_timeout = e + self.rng.randrange(e)

    def _become_follower(self, term: int, lead: int) -> None:
        self._reset(term)
        self.lead = lead
        self.role = Role.FOLLOWER

    def _become_pre_candidate(self) -> None:
        # No term change: a pre-vote only asks whether an election could be won.
        self.votes = {}
        self.lead = NONE
        self.role = Role.PRE_CANDIDATE

    def _become_candidate(self) -> None:
        self._reset(self.term + 1)
        self.vote = self.id
        self.role = Role.CANDIDATE

    def _become_leader(self) -> None:
        self._reset(self.term)
        self.lead = self.id
        self.role = Role.LEADER
        last = self.log.last_index()
        for mid in self.conf.members() | {self.id}:
            self.prs[mid] = self._new_progress(last + 1)
        me = self.prs[self.id]
        me.become_replicate()
        me.maybe_update(self.log.stable)
        # The no-op of our term: until it commits we cannot know what is committed (§8).
        self._append([b""], EntryType.NORMAL)

    def _new_progress(self, next_index: int) -> Progress:
        return Progress(next_index, self.cfg.max_inflight_msgs, self.cfg.max_inflight_bytes)

    # == elections =============================================================================

    def _tick_election(self) -> None:
        self.election_elapsed += 1
        # Only a member that may campaign restarts its timer here: for everyone else the
        # elapsed time is what tells whether a leader is still around (see ``step``).
        if self.is_promotable() and self.election_elapsed >= self.randomized_timeout:
            self.election_elapsed = 0
            self._hup(transfer=False)

    def _hup(self, transfer: bool) -> None:
        if not self.is_promotable() or self._unapplied_conf_change():
            return
        if not self.cfg.pre_vote or transfer:
            self._campaign(transfer)
            return
        # Pre-vote: ask whether we could win before disturbing anyone's term.
        self._become_pre_candidate()
        self.votes[self.id] = True
        if self._poll() == quorum.VoteResult.WON:
            self._campaign(transfer=False)
            return
        self._request_votes(MT.PRE_VOTE, self.term + 1, 0)

    def _campaign(self, transfer: bool) -> None:
        self._become_candidate()
        self.votes[self.id] = True
        if self._poll() == quorum.VoteResult.WON:
            self._become_leader()
            return
        self._request_votes(MT.VOTE, self.term, CAMPAIGN_TRANSFER if transfer else 0)

    def _request_votes(self, vote_type: MessageType, term: int, context: int) -> None:
        last_index, last_term = self.log.last_index(), self.log.last_term()
        for mid in sorted(self.conf.all_voters()):
            if mid != self.id:
                self.msgs.append(
                    Message(
                        vote_type,
                        mid,
                        self.id,
                        term,
                        index=last_index,
                        log_term=last_term,
                        context=context,
                    )
                )

    def _poll(self) -> quorum.VoteResult:
        return quorum.joint_vote(self.conf.voters, self.conf.outgoing, self.votes)

    def _unapplied_conf_change(self) -> bool:
        log = self.log
        lo = log.applied + 1
        for idx in range(max(lo, log.first_index()), log.committed + 1):
            if log.entries[idx - log.offset - 1].type == EntryType.CONF_CHANGE:
                return True
        return False

    def _handle_vote_request(self, m: Message) -> None:
        resp = MT.VOTE_RESP if m.type == MT.VOTE else MT.PRE_VOTE_RESP
        can_vote = (
            self.vote == m.frm
            or (self.vote == NONE and self.lead == NONE)
            or (m.type == MT.PRE_VOTE and m.term > self.term)
        )
        if can_vote and self.log.is_up_to_date(m.index, m.log_term):
            # A granted pre-vote answers in the term it was asked about.
            self.msgs.append(Message(resp, m.frm, self.id, m.term))
            if m.type == MT.VOTE:
                self.election_elapsed = 0
                self.vote = m.frm
        else:
            self._send(resp, m.frm, reject=True)

    def _step_candidate(self, m: Message) -> None:
        t = m.type
        if t in (MT.APP, MT.HEARTBEAT, MT.SNAP):
            self._become_follower(m.term, m.frm)
            self._step_follower(m)
        elif (t == MT.VOTE_RESP and self.role == Role.CANDIDATE) or (
            t == MT.PRE_VOTE_RESP and self.role == Role.PRE_CANDIDATE
        ):
            self.votes.setdefault(m.frm, not m.reject)
            result = self._poll()
            if result == quorum.VoteResult.WON:
                if self.role == Role.PRE_CANDIDATE:
                    self._campaign(transfer=False)
                else:
                    self._become_leader()
            elif result == quorum.VoteResult.LOST:
                self._become_follower(self.term, NONE)

    # == follower ==============================================================================

    def _step_follower(self, m: Message) -> None:
        t = m.type
        if t == MT.APP:
            self.election_elapsed = 0
            self.lead = m.frm
            self._handle_append(m)
        elif t == MT.HEARTBEAT:
            self.election_elapsed = 0
            self.lead = m.frm
            self.log.commit_to(min(m.commit, self.log.last_index()))
            self._send(MT.HEARTBEAT_RESP, m.frm, context=m.context)
        elif t == MT.SNAP:
            self.election_elapsed = 0
            self.lead = m.frm
            self._handle_snapshot(m)
        elif t == MT.PROP:
            if self.lead != NONE:
                self.msgs.append(Message(MT.PROP, self.lead, self.id, 0, entries=m.entries))
        elif t == MT.TRANSFER_LEADER:
            if self.lead != NONE:
                self.msgs.append(
                    Message(MT.TRANSFER_LEADER, self.lead, self.id, 0, context=m.context)
                )
        elif t == MT.TIMEOUT_NOW:
            self._hup(transfer=True)
        elif t == MT.READ_INDEX_RESP:
            self.released.add(m.index, m.reads)

    def _handle_append(self, m: Message) -> None:
        log = self.log
        if m.index < log.committed:
            self._send(MT.APP_RESP, m.frm, index=log.committed)
            return
        appended = log.maybe_append(m.index, m.log_term, m.commit, m.entries)
        if appended is not None:
            last_new, first_written = appended
            if first_written:
                self._track_conf(first_written)
            if m.context != COMMIT_ONLY or m.entries:
                self._send(MT.APP_RESP, m.frm, index=last_new)
            return
        hint, hint_term = log.find_conflict_by_term(min(m.index, log.last_index()), m.log_term)
        self._send(
            MT.APP_RESP, m.frm, index=m.index, reject=True, reject_hint=hint, log_term=hint_term
        )

    def _handle_snapshot(self, m: Message) -> None:
        snap = m.snapshot
        if snap is None:
            raise RaftInvariantError("snapshot message without a snapshot")
        if self._restore(snap):
            self._send(MT.APP_RESP, m.frm, index=self.log.last_index())
        else:
            self._send(MT.APP_RESP, m.frm, index=self.log.committed)

    def _restore(self, snap: Snapshot) -> bool:
        meta = snap.meta
        log = self.log
        if meta.index <= log.committed:
            return False
        if log.match_term(meta.index, meta.term):
            # We hold the snapshot's last entry: keep our log, just learn the commit.
            log.commit_to(meta.index)
            return False
        log.restore(snap)
        self.conf = meta.conf
        self._conf_history = [(meta.index, meta.conf)]
        return True

    # == leader ================================================================================

    def _tick_leader(self) -> None:
        self.heartbeat_elapsed += 1
        self.election_elapsed += 1
        if self.election_elapsed >= self.cfg.election_tick:
            self.election_elapsed = 0
            if self.cfg.check_quorum and not self._quorum_active():
                self._become_follower(self.term, NONE)
                return
            if self.lead_transferee != NONE:
                self.lead_transferee = NONE
                # A leader outside the configuration keeps leading (so the voters keep
                # learning the commit index) and tries again to hand over.
                self._hand_over_if_leaving()
        if self._departing:
            for mid in [m for m, until in self._departing.items() if until <= self.ticks]:
                del self._departing[mid]
                self.prs.pop(mid, None)
        retry = self.cfg.snapshot_retry_ticks or 2 * self.cfg.election_tick
        for pr in self.prs.values():
            if pr.state == ProgressState.SNAPSHOT:
                pr.snapshot_ticks += 1
                if pr.snapshot_ticks >= retry:
                    pr.pending_snapshot = 0
                    pr.become_probe()
        if self.heartbeat_elapsed >= self.cfg.heartbeat_tick:
            self.heartbeat_elapsed = 0
            self._bcast_heartbeat()

    def _quorum_active(self) -> bool:
        active = {mid: (mid == self.id or pr.recent_active) for mid, pr in self.prs.items()}
        for mid, pr in self.prs.items():
            if mid != self.id:
                pr.recent_active = False
        result = quorum.joint_vote(self.conf.voters, self.conf.outgoing, active)
        return result == quorum.VoteResult.WON

    def _step_leader(self, m: Message) -> None:
        t = m.type
        if t == MT.PROP:
            try:
                self._check_accepting()
            except ProposalDropped:
                return
            if m.entries:
                last = self._append([e.data for e in m.entries], EntryType.NORMAL)
                pr = self.prs.get(m.frm)
                if pr is not None:
                    pr.awaits_commit = last  # it answers its client once it applies them
            return
        if t == MT.READ_INDEX:
            self._leader_read(m.frm, m.reads)
            return
        if t == MT.TRANSFER_LEADER:
            self._leader_transfer(m.context)
            return
        pr = self.prs.get(m.frm)
        if pr is None:
            return
        if t == MT.APP_RESP:
            self._handle_append_response(m, pr)
        elif t == MT.HEARTBEAT_RESP:
            pr.recent_active = True
            pr.paused = False
            if pr.state == ProgressState.REPLICATE and pr.inflights.full():
                # An append may have been lost: let one more through, so that a gap is
                # noticed and the follower falls back to probing.
                pr.inflights.free_first()
            if m.context and self.reads.ack(m.frm, m.context):
                self._check_read_rounds()
            if pr.match < self.log.last_index() or pr.state == ProgressState.PROBE:
                self._send_append(m.frm, pr, send_empty=True)

    def _handle_append_response(self, m: Message, pr: Progress) -> None:
        pr.recent_active = True
        if m.reject:
            probe = m.reject_hint
            if m.log_term > 0:
                probe, _ = self.log.find_conflict_by_term(m.reject_hint, m.log_term)
            if pr.maybe_decrease(m.index, probe):
                if pr.state == ProgressState.REPLICATE:
                    pr.become_probe()
                self._send_append(m.frm, pr, send_empty=True)
            return
        was_paused = pr.is_paused()
        if not pr.maybe_update(m.index):
            if was_paused and not pr.is_paused():
                self._send_append(m.frm, pr, send_empty=False)
            return
        if pr.state == ProgressState.PROBE:
            pr.become_replicate()
        elif pr.state == ProgressState.SNAPSHOT:
            if pr.match >= pr.pending_snapshot:
                pr.become_replicate()
        else:
            pr.inflights.free_le(m.index)
        self._maybe_commit()
        while self._send_append(m.frm, pr, send_empty=False):
            pass
        if m.frm == self.lead_transferee and pr.match == self.log.last_index():
            self._send_timeout_now(m.frm)

    def _check_accepting(self) -> None:
        if self.lead_transferee != NONE:
            raise ProposalDropped("leadership transfer in progress")
        if self.id not in self.conf.voters:
            # A leader that is leaving the configuration takes nothing new: anything it
            # appended after C_new could make its log "more up to date" than every voter of
            # C_new, and no one could then win the election that follows its departure.
            raise ProposalDropped("the leader is leaving the configuration")

    def _append(self, datas: Sequence[bytes], etype: EntryType) -> int:
        log = self.log
        first = log.last_index() + 1
        term = self.term
        log.append([Entry(term, first + i, d, etype) for i, d in enumerate(datas)])
        if etype == EntryType.CONF_CHANGE:
            self._track_conf(first)
        # Followers get the new entries when the turn ends (ready), not now: a leader steps
        # many proposals a turn (forwarded batches from every follower, its own clients'),
        # and one append per follower carrying all of them costs both sides one message
        # instead of one per batch.
        self._append_news = True
        return log.last_index()

    def _broadcast_append(self) -> None:
        self._append_news = False
        if self.role != Role.LEADER:
            return
        for mid, pr in self.prs.items():
            if mid != self.id:
                while self._send_append(mid, pr, send_empty=False):
                    pass

    def _send_append(self, to: int, pr: Progress, send_empty: bool, announce: bool = False) -> bool:
        """Send ``to`` what it lacks, if its pacing allows; True if a message went out.

        ``announce``: the message is sent for its commit index; empty and to a follower in
        replicate state, it asks for no answer (``COMMIT_ONLY``).
        """
        if pr.is_paused():
            return False
        log = self.log
        last = log.last_index()
        if pr.next > last + 1:
            pr.next = last + 1
        prev = pr.next - 1
        prev_term = log.term(prev)
        if prev_term is None:
            return self._send_snapshot(to, pr)
        if pr.next <= last:
            ents = log.slice(pr.next, self.cfg.max_msg_bytes, self.cfg.max_msg_entries)
        elif send_empty:
            ents = []
        else:
            return False
        quiet = announce and not ents and pr.state == ProgressState.REPLICATE
        self.msgs.append(
            Message(
                MT.APP,
                to,
                self.id,
                self.term,
                index=prev,
                log_term=prev_term,
                entries=ents,
                commit=log.committed,
                context=COMMIT_ONLY if quiet else 0,
            )
        )
        pr.sent_commit = log.committed
        if pr.state == ProgressState.REPLICATE:
            if ents:
                end = ents[-1].index
                pr.inflights.add(end, log.bytes_between(pr.next, end))
                pr.next = end + 1
        else:
            pr.paused = True
        return True

    def _send_snapshot(self, to: int, pr: Progress) -> bool:
        meta = self.log.snapshot
        self.msgs.append(Message(MT.SNAP, to, self.id, self.term, snapshot=Snapshot(meta)))
        pr.become_snapshot(meta.index)
        return True

    def commit_unannounced(self) -> bool:
        """True while a streaming follower has not been told the leader's commit index.

        The leader tells a follower at once only when the follower waits for it (its own
        forwarded proposals or reads, or it is being probed). Others learn it from the next
        append, which usually follows within a write's round trip; the driver calls
        ``announce_commit`` after a short delay when none did.
        """
        if self.role != Role.LEADER:
            return False
        commit = self.log.committed
        return any(
            mid != self.id and pr.sent_commit < commit and not pr.is_paused()
            for mid, pr in self.prs.items()
        )

    def announce_commit(self) -> None:
        """Tell every follower a commit index it has not heard of yet."""
        self._announce_commit(defer=False)

    def _announce_commit(self, defer: bool) -> None:
        """Send followers the commit index they lack, one empty append each.

        ``defer``: leave out streaming followers that wait for nothing below it. Each such
        announcement costs both members a message, most of a follower's work per write when
        one client writes to the leader, and the next append carries the index anyway.
        """
        self._commit_news = False
        if self.role != Role.LEADER:
            return
        commit = self.log.committed
        for mid, pr in self.prs.items():
            if mid == self.id or pr.sent_commit >= commit:
                continue
            if defer and pr.state == ProgressState.REPLICATE and pr.awaits_commit <= pr.sent_commit:
                continue
            self._send_append(mid, pr, send_empty=True, announce=True)

    def _bcast_heartbeat(self) -> None:
        # Every heartbeat round doubles as a read-confirmation round.
        round_ = self.reads.start_round(self.ticks)
        commit = self.log.committed
        for mid, pr in self.prs.items():
            if mid != self.id:
                pr.sent_commit = max(pr.sent_commit, min(pr.match, commit))
                self.msgs.append(
                    Message(
                        MT.HEARTBEAT,
                        mid,
                        self.id,
                        self.term,
                        commit=min(pr.match, commit),
                        context=round_,
                    )
                )

    def _match_of(self, mid: int) -> int:
        pr = self.prs.get(mid)
        return pr.match if pr is not None else 0

    def _maybe_commit(self) -> bool:
        log = self.log
        index = quorum.joint_index(self.conf.voters, self.conf.outgoing, self._match_of)
        if index <= log.committed or index > log.last_index():
            return False
        # Figure 8: only an entry of our own term is committed by counting replicas.
        if log.term(index) != self.term:
            return False
        first_of_term = log.term(log.committed) != self.term
        log.commit_to(index)
        self._commit_news = True
        if first_of_term and self._reads_awaiting_term_commit:
            waiting, self._reads_awaiting_term_commit = self._reads_awaiting_term_commit, []
            for requester, contexts in waiting:
                self._leader_read(requester, contexts)
        conf_index = self._conf_history[-1][0]
        if conf_index <= index:
            if self.conf.joint:
                # C_old,new is committed: move on to C_new (§4.3).
                self._propose_conf(ConfChange(self.conf.left()))
            else:
                self._hand_over_if_leaving()
        return True

    def _hand_over_if_leaving(self) -> None:
        """Not a voter of the committed configuration: give leadership to the best voter."""
        conf = self.conf
        if (
            self.role != Role.LEADER
            or conf.is_voter(self.id)
            or self.lead_transferee != NONE
            or self._conf_history[-1][0] > self.log.committed
        ):
            return
        best = max(
            (mid for mid in conf.voters if mid in self.prs),
            key=lambda mid: (self.prs[mid].match, -mid),
            default=NONE,
        )
        if best != NONE:
            self._leader_transfer(best)

    def _propose_conf(self, cc: ConfChange) -> int:
        return self._append([cc.encode()], EntryType.CONF_CHANGE)

    # == configuration ========================================================================

    def _track_conf(self, first: int) -> None:
        """The log changed from index ``first`` on: follow its latest configuration.

        A configuration takes effect as soon as it is in the log, committed or not (§4.1 of
        the Raft thesis), and is dropped again if its entry is overwritten. Waiting for the
        apply instead would let a member whose commit index is stale campaign under a
        configuration the rest of the cluster has already left.
        """
        hist = self._conf_history
        while len(hist) > 1 and hist[-1][0] >= first:
            hist.pop()
        log = self.log
        for e in log.entries[max(0, first - log.offset - 1) :]:
            if e.type == EntryType.CONF_CHANGE:
                hist.append((e.index, ConfChange.decode(e.data).conf))
        if hist[-1][1] != self.conf:
            self._switch_conf(hist[-1][1])

    def _switch_conf(self, conf: ConfState) -> None:
        self.conf = conf
        if self.role != Role.LEADER:
            return
        members = conf.members()
        last = self.log.last_index()
        for mid in members:
            if mid not in self.prs:
                self.prs[mid] = self._new_progress(last + 1)
            self._departing.pop(mid, None)
        # Members that were just left out keep receiving the log for a while, so that they
        # learn of their removal (and stop) instead of campaigning in a configuration the
        # rest of the cluster has left. They count for nothing.
        for mid in self.prs:
            if mid not in members and mid != self.id and mid not in self._departing:
                self._departing[mid] = self.ticks + 2 * self.cfg.election_tick
        if self.lead_transferee != NONE and not conf.is_voter(self.lead_transferee):
            self.lead_transferee = NONE
        self._maybe_commit()

    def _conf_at(self, index: int) -> ConfState:
        conf = self._conf_history[0][1]
        for at, c in self._conf_history:
            if at > index:
                break
            conf = c
        return conf

    # == reads =================================================================================

    def _leader_read(self, requester: int, contexts: tuple[bytes, ...]) -> None:
        log = self.log
        if log.term(log.committed) != self.term:
            # Until our no-op commits we don't know the true commit index (§6.4 step 1).
            self._reads_awaiting_term_commit.append((requester, contexts))
            return
        index = log.committed
        if self._self_quorum() or self.has_lease():
            self._release_read(requester, index, contexts)
            return
        rr = self.reads
        if rr.open:
            # This round's heartbeats have not left yet: they were sent after this read too.
            rr.pending.append(PendingRead(rr.round, index, requester, contexts))
        elif rr.in_flight():
            # The round out left before this read came: it waits for the next one, which
            # starts once that is confirmed (``_check_read_rounds``), with every read since.
            rr.pending.append(PendingRead(rr.round + 1, index, requester, contexts))
        else:
            self._bcast_heartbeat()
            rr.pending.append(PendingRead(rr.round, index, requester, contexts))

    def _self_quorum(self) -> bool:
        me = self.id
        return (
            quorum.joint_index(
                self.conf.voters, self.conf.outgoing, lambda mid: 1 if mid == me else 0
            )
            >= 1
        )

    def _check_read_rounds(self) -> None:
        me, newest = self.id, self.reads.round
        acks = self.reads.acks
        # The leader is in every round it started, and in none it has not: counting it as
        # INFINITE would let a configuration where it alone is a quorum (a late echo after
        # 3 -> 1) confirm every future round at once, and no read would be released again
        # once the cluster grew back.
        confirmed = quorum.joint_index(
            self.conf.voters,
            self.conf.outgoing,
            lambda mid: newest if mid == me else acks.get(mid, 0),
        )
        # Nor does any echo confirm a round that has not started (learners' echoes land here).
        confirmed = min(confirmed, newest)
        lease = 0 if self._lease_forbidden else self.lease_ticks
        rr = self.reads
        for pending in rr.confirm(confirmed, lease):
            self._release_read(pending.requester, pending.index, pending.contexts)
        if rr.pending and not rr.in_flight():
            self._bcast_heartbeat()  # the round the reads that came meanwhile wait for

    def _release_read(self, requester: int, index: int, contexts: tuple[bytes, ...]) -> None:
        if requester == self.id:
            self.released.add(index, contexts)
        else:
            resp = Message(
                MT.READ_INDEX_RESP, requester, self.id, self.term, index=index, reads=contexts
            )
            self.msgs.append(resp)
            pr = self.prs.get(requester)
            if pr is not None and pr.sent_commit < index:
                # It serves the reads once it has applied up to the index: tell it now.
                pr.awaits_commit = max(pr.awaits_commit, index)
                self._commit_news = True

    # == leadership transfer ===================================================================

    def _leader_transfer(self, to: int) -> None:
        if to == self.id or to not in self.prs or not self.conf.is_voter(to):
            return
        if self.lead_transferee == to:
            return
        self.lead_transferee = to
        self.election_elapsed = 0  # the transfer aborts after one election timeout
        pr = self.prs[to]
        if pr.match == self.log.last_index():
            self._send_timeout_now(to)
        else:
            self._send_append(to, pr, send_empty=True)

    def _send_timeout_now(self, to: int) -> None:
        # The target may win at any time from now on, whatever becomes of this transfer:
        # no lease can be trusted for the rest of this term.
        self._lease_forbidden = True
        self.msgs.append(Message(MT.TIMEOUT_NOW, to, self.id, self.term))

    # == helpers ===============================================================================

    def _send(
        self,
        type: MessageType,
        to: int,
        *,
        index: int = 0,
        log_term: int = 0,
        reject: bool = False,
        reject_hint: int = 0,
        context: int = 0,
    ) -> None:
        self.msgs.append(
            Message(
                type,
                to,
                self.id,
                self.term,
                index=index,
                log_term=log_term,
                reject=reject,
                reject_hint=reject_hint,
                context=context,
            )
        )
