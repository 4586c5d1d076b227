"""Scripted scenarios: each test tells one story from the Raft paper or from operations.

They drive a simulated cluster by hand (``stabilize`` delivers everything in flight), so each
step of the story is explicit and its outcome asserted.
"""

from __future__ import annotations

import pytest

from flotilla.node.raft.core import (
    MAX_CATCH_UP_TICKS,
    Config,
    InitialState,
    RaftCore,
    Role,
    catch_up,
)
from flotilla.node.raft.errors import ConfChangeRejected, ProposalDropped
from flotilla.node.raft.types import (
    COMMIT_ONLY,
    ConfState,
    Entry,
    EntryType,
    HardState,
    Message,
    MessageType,
    Snapshot,
    SnapshotMeta,
)

from .cluster import Cluster

MT = MessageType


def leader_of(c: Cluster) -> int:
    lead = c.leader()
    assert lead is not None, "no leader"
    return lead


def elect_among(c: Cluster, ids: list[int], max_ticks: int = 100) -> int:
    """Let ``ids`` time out until one of them leads (ticks are the only trigger)."""
    for _ in range(max_ticks):
        c.tick(ids)
        c.stabilize()
        lead = c.leader()
        if lead in ids and c[lead].term == max(c[i].term for i in ids):
            return lead
    raise AssertionError(f"none of {ids} became leader within {max_ticks} ticks")


def write(c: Cluster, node: int, data: bytes) -> None:
    c.propose(node, data)
    c.stabilize()


def applied_writes(c: Cluster, node: int) -> set[bytes]:
    return set(c.members[node].sm.writes)


# -- Figure 8 -----------------------------------------------------------------------------


def test_figure8_leader_only_commits_entries_of_its_own_term_by_counting() -> None:
    """An entry from an earlier term on a majority is not committed until one of ours is."""
    conf = ConfState(frozenset({1, 2, 3}))
    old = [Entry(1, 1), Entry(2, 2)]
    core = RaftCore(
        Config(1),
        InitialState(HardState(term=2), SnapshotMeta(0, 0, conf), old, applied=0),
    )
    core.campaign()
    core.step(Message(MT.PRE_VOTE_RESP, 1, 2, 3))
    core.step(Message(MT.VOTE_RESP, 1, 2, 3))
    assert core.role == Role.LEADER and core.term == 3
    rd = core.ready()
    core.advance(rd)  # our no-op (index 3) is durable here
    assert core.last_index() == 3

    # Member 2 acknowledges the term-2 entry: it is on a majority, but not ours.
    core.step(Message(MT.APP_RESP, 1, 2, 3, index=2))
    assert core.commit == 0

    # Member 2 acknowledges our no-op: now index 3, and with it index 2, are committed.
    core.step(Message(MT.APP_RESP, 1, 2, 3, index=3))
    assert core.commit == 3


def test_leader_counts_itself_only_once_its_write_is_durable() -> None:
    c = Cluster(1)
    c.elect(1)
    core = c[1]
    core.propose([b"w-durable"])
    rd = core.ready()
    assert rd.entries and rd.entries[-1].index == core.last_index()
    assert core.commit < core.last_index(), "committed before the entry was on disk"
    core.advance(rd)
    assert core.commit == core.last_index()


def test_only_entries_snapshots_terms_and_votes_need_an_fsync() -> None:
    """A ready that only moves the commit index is written without fsync (etcd's MustSync)."""
    conf = ConfState(frozenset({1, 2, 3}))
    core = RaftCore(Config(1), InitialState(HardState(term=1), SnapshotMeta(0, 0, conf), []))
    core.campaign()
    core.step(Message(MT.PRE_VOTE_RESP, 1, 2, 1))
    rd = core.ready()
    assert rd.hard_state is not None and rd.hard_state.vote == 1
    assert rd.must_sync, "a new term and vote must be durable before the votes are asked"
    core.advance(rd)
    core.step(Message(MT.VOTE_RESP, 1, 2, 2))
    rd = core.ready()  # leader now: its no-op entry
    assert rd.entries and rd.must_sync
    core.advance(rd)
    core.step(Message(MT.APP_RESP, 1, 2, 2, index=rd.entries[-1].index))
    rd = core.ready()
    assert rd.hard_state is not None and rd.hard_state.commit == core.commit > 0
    assert rd.committed_entries and not rd.entries
    assert not rd.must_sync, "a commit index alone was made to wait for an fsync"


def test_a_commit_announcement_to_a_streaming_follower_asks_for_no_answer() -> None:
    """The leader's message that only carries a new commit index is not acknowledged
    (nothing new to acknowledge) unless the follower must reject it."""
    conf = ConfState(frozenset({1, 2, 3}))
    leader, index = leader_with_one_streaming_follower()
    rd = leader.ready()
    assert 2 not in {m.to for m in rd.messages if m.type == MT.APP}, (
        "a follower that waits for nothing was told the commit index at once"
    )
    assert leader.commit_unannounced()
    leader.advance(rd)
    leader.announce_commit()  # the driver's short timer ran out, no append went meanwhile
    rd = leader.ready()
    announced = {m.to: m for m in rd.messages if m.type == MT.APP}
    assert announced[2].commit == index and not announced[2].entries
    assert announced[2].context == COMMIT_ONLY
    assert 3 not in announced, "a probed follower gets one message at a time"
    assert not leader.commit_unannounced()

    follower = RaftCore(
        Config(2), InitialState(HardState(term=2), SnapshotMeta(0, 0, conf), [Entry(2, 1)])
    )
    follower.step(announced[2])
    rd = follower.ready()
    assert follower.commit == index and [e.index for e in rd.committed_entries] == [index]
    assert not [m for m in rd.messages + rd.messages_after_persist if m.type == MT.APP_RESP]
    follower.advance(rd)
    gap = Message(MT.APP, 2, 1, 2, index=5, log_term=2, commit=5, context=COMMIT_ONLY)
    follower.step(gap)
    rd = follower.ready()
    answers = [m for m in rd.messages + rd.messages_after_persist if m.type == MT.APP_RESP]
    assert len(answers) == 1 and answers[0].reject, "a mismatch must still be reported"


def leader_with_one_streaming_follower() -> tuple[RaftCore, int]:
    """Member 1 leads {1, 2, 3} in term 2; 2 acknowledged the no-op, which is committed
    (the ready that says so not yet taken); 3 has not answered its probe."""
    conf = ConfState(frozenset({1, 2, 3}))
    leader = RaftCore(Config(1), InitialState(HardState(term=1), SnapshotMeta(0, 0, conf), []))
    leader.campaign()
    leader.step(Message(MT.PRE_VOTE_RESP, 1, 2, 1))
    leader.advance(leader.ready())
    leader.step(Message(MT.VOTE_RESP, 1, 2, 2))
    noop = leader.ready()
    leader.advance(noop)
    index = noop.entries[-1].index
    leader.step(Message(MT.APP_RESP, 1, 2, 2, index=index))
    assert leader.commit == index
    return leader, index


def test_a_follower_waiting_for_nothing_learns_a_commit_from_the_next_append() -> None:
    leader, index = leader_with_one_streaming_follower()
    leader.advance(leader.ready())
    assert leader.commit_unannounced()
    leader.propose([b"next"])
    rd = leader.ready()
    [append] = [m for m in rd.messages if m.type == MT.APP and m.to == 2]
    assert append.commit == index and [e.data for e in append.entries] == [b"next"]
    assert not leader.commit_unannounced(), "the append carried it: nothing left to announce"


def test_a_follower_that_forwarded_a_proposal_hears_of_its_commit_at_once() -> None:
    leader, _ = leader_with_one_streaming_follower()
    leader.advance(leader.ready())
    leader.step(Message(MT.PROP, 1, 2, 0, entries=[Entry(0, 0, b"from-2")]))
    rd = leader.ready()
    [append] = [m for m in rd.messages if m.type == MT.APP and m.to == 2]
    leader.advance(rd)
    last = append.entries[-1].index
    leader.step(Message(MT.APP_RESP, 1, 2, 2, index=last))
    assert leader.commit == last
    rd = leader.ready()
    told = [m for m in rd.messages if m.type == MT.APP and m.to == 2]
    assert told and told[0].commit == last, "the follower answering its client was left waiting"


@pytest.mark.parametrize("lease_reads", [False, True])
def test_a_follower_read_is_released_without_the_delayed_announcement(lease_reads: bool) -> None:
    c = Cluster(3, lease_reads=lease_reads)
    c.announce_chance = 0.0  # the driver's timer never fires
    c.tick(n=12)  # past the quiet period after start
    c.elect(1)
    c.tick([1], n=2)
    c.stabilize()
    write(c, 1, b"w1")
    assert b"w1" not in applied_writes(c, 2), "the scenario needs a follower behind"
    assert c[1].has_lease() == lease_reads
    c.read(2, b"r-follower")
    c.stabilize()
    assert not c.members[2].waiting_reads, "the follower never learned the read's index"
    assert b"w1" in applied_writes(c, 2)
    assert c.reads_checked == 1


# -- partitions ---------------------------------------------------------------------------


def test_stale_leader_in_minority_can_neither_commit_nor_serve_reads() -> None:
    c = Cluster(5)
    c.elect(1)
    write(c, 1, b"w-before")

    c.partition([1, 2], [3, 4, 5])
    c.propose(1, b"w-minority")
    c.read(1, b"r-stale")
    c.stabilize()
    # The majority side elects a new leader and moves on.
    new = elect_among(c, [3, 4, 5])
    write(c, new, b"w-majority")

    assert c[1].role == Role.LEADER  # it does not know yet
    assert b"w-minority" not in applied_writes(c, 1)
    assert b"r-stale" in c.members[1].waiting_reads, "a stale leader served a read"
    assert c[1].commit < c[new].commit

    c.heal()
    c.tick([new], n=2)  # heartbeats of the new leader
    c.stabilize()
    assert c[1].role == Role.FOLLOWER and c[1].lead == new
    assert b"w-majority" in applied_writes(c, 1)
    assert b"w-minority" not in applied_writes(c, 1)


def test_prevote_stops_a_rejoining_member_from_disrupting_the_leader() -> None:
    c = Cluster(3)
    c.elect(1)
    write(c, 1, b"w1")
    term = c[1].term

    c.isolate(3)
    # Alone, member 3 times out again and again, but pre-votes never raise its term.
    c.tick([3], n=60)
    c.stabilize()
    assert c[3].term == term

    write(c, 1, b"w2")
    c.heal()
    c.tick([1, 3], n=30)
    c.stabilize()
    assert c[1].role == Role.LEADER and c[1].term == term
    assert c[3].lead == 1


def test_without_prevote_the_rejoining_member_forces_a_new_term() -> None:
    """The counterpart of the test above, showing what pre-vote protects against."""
    c = Cluster(3, pre_vote=False)
    c.elect(1)
    term = c[1].term
    c.isolate(3)
    c.tick([3], n=60)
    c.stabilize()
    assert c[3].term > term


def test_a_vote_request_from_an_older_term_is_rejected_with_ours() -> None:
    """Raft 5.1: the stale candidate learns our term from the answer, so its next campaign
    can win, instead of trailing a candidate it never hears from term after term."""
    conf = ConfState(frozenset({1, 2, 3}))
    core = RaftCore(
        Config(1, pre_vote=False),
        InitialState(HardState(term=7, vote=1), SnapshotMeta(0, 0, conf), []),
    )
    core.step(Message(MT.VOTE, 1, 3, 5, index=9, log_term=5))
    rd = core.ready()
    answers = [(m.type, m.to, m.term, m.reject) for m in rd.messages + rd.messages_after_persist]
    assert answers == [(MT.VOTE_RESP, 3, 7, True)]
    assert core.term == 7 and core.vote == 1


def test_check_quorum_makes_an_isolated_leader_step_down() -> None:
    c = Cluster(3)
    c.elect(1)
    c.isolate(1)
    # The first check after the election still sees everyone as recently active.
    c.tick([1], n=c[1].cfg.election_tick)
    assert c[1].role == Role.LEADER
    c.tick([1], n=c[1].cfg.election_tick)
    assert c[1].role == Role.FOLLOWER


# -- membership ---------------------------------------------------------------------------


def test_three_to_five_in_one_joint_transition_with_a_crash_in_the_joint_phase() -> None:
    c = Cluster(3, spares=2)
    c.elect(1)
    write(c, 1, b"w-before")

    c[1].propose_conf_change({1, 2, 3, 4, 5})
    # Let the joint entry reach everyone, but stop before the leave entry commits.
    c.members[1].drain()
    c.deliver_all()
    for m in (2, 3, 4, 5):
        c.members[m].drain()
    assert c[1].conf.joint, "the leader should be in C_old,new"
    assert c[1].conf.outgoing == {1, 2, 3} and c[1].conf.voters == {1, 2, 3, 4, 5}

    # The leader crashes in the joint phase; the others elect a new one, who finishes.
    c.crash(1)
    c.stabilize()
    lead = elect_among(c, [2, 3, 4, 5])
    c.restart(1)
    c.tick(n=5)
    c.stabilize()
    assert c[lead].conf == ConfState(frozenset({1, 2, 3, 4, 5}))
    write(c, lead, b"w-after")
    for m in range(1, 6):
        assert {b"w-before", b"w-after"} <= applied_writes(c, m)


@pytest.mark.parametrize("cut", [(4, 5), (2, 3)], ids=["new-side-cut", "old-side-cut"])
def test_joint_phase_needs_both_majorities(cut: tuple[int, int]) -> None:
    """C_old = {1,2,3} -> C_new = {1,4,5}: with either side cut off, nothing commits."""
    c = Cluster(3, spares=2)
    c.elect(1)
    for m in cut:
        c.isolate(m)
    c[1].propose_conf_change({1, 4, 5})
    c.stabilize()
    assert c[1].conf.joint
    before = c[1].commit
    c.propose(1, b"w-stuck")
    c.stabilize()
    assert c[1].commit == before, "committed without a majority of both configurations"
    c.heal()
    c.tick([1], n=2)
    assert not c[1].conf.joint and c[1].conf.voters == {1, 4, 5}
    assert b"w-stuck" in applied_writes(c, 4)


def test_five_to_three_removing_the_leader_hands_over_leadership() -> None:
    c = Cluster(5)
    c.elect(1)
    write(c, 1, b"w-before")
    c[1].propose_conf_change({3, 4, 5})
    c.stabilize()
    c.tick([1], n=2)
    c.stabilize()
    lead = leader_of(c)
    assert lead in {3, 4, 5}, f"leader {lead} is not in C_new"
    assert c[lead].conf == ConfState(frozenset({3, 4, 5}))
    with pytest.raises(ProposalDropped):
        c[1].propose([b"w-removed"])
    write(c, lead, b"w-after")
    for m in (3, 4, 5):
        assert {b"w-before", b"w-after"} <= applied_writes(c, m)


def test_only_one_configuration_change_at_a_time() -> None:
    c = Cluster(3, spares=1)
    c.elect(1)
    c[1].propose_conf_change({1, 2, 3}, {4})
    with pytest.raises(ConfChangeRejected) as err:
        c[1].propose_conf_change({1, 2, 3, 4})
    assert err.value.retriable


def test_learner_catches_up_and_is_promoted() -> None:
    c = Cluster(3, spares=1)
    c.elect(1)
    for i in range(20):
        c.propose(1, b"w%d" % i)
    c.stabilize()
    c[1].propose_conf_change({1, 2, 3}, {4})
    c.stabilize()
    assert c[1].conf.learners == {4} and not c[1].conf.joint
    assert c[4].commit == c[1].commit, "the learner did not catch up"
    assert len(applied_writes(c, 4)) == 20

    # A learner never votes in elections nor counts for commits.
    c.isolate(2)
    c.isolate(3)
    c.net.cut -= {(1, 4), (4, 1)}
    c.propose(1, b"w-learner-only")
    c.stabilize()
    assert b"w-learner-only" not in applied_writes(c, 1)
    c.heal()
    c.tick([1], n=2)
    c.stabilize()

    c[1].propose_conf_change({1, 2, 3, 4})
    c.stabilize()
    c.tick([1], n=2)
    c.stabilize()
    assert c[4].conf == ConfState(frozenset({1, 2, 3, 4}))
    assert c[4].is_promotable()


def test_a_member_that_was_removed_cannot_win_an_election() -> None:
    c = Cluster(3)
    c.elect(1)
    c[1].propose_conf_change({1, 2})
    c.stabilize()
    c.tick([1], n=2)
    c.stabilize()
    assert c[1].conf.voters == {1, 2}
    write(c, 1, b"w-after-removal")
    c.isolate(3)
    c.tick([3], n=40)
    c.heal()
    c.stabilize()
    assert c[1].role == Role.LEADER
    assert c[3].role != Role.LEADER


# -- snapshots ----------------------------------------------------------------------------


def test_snapshot_install_on_a_far_behind_follower() -> None:
    c = Cluster(3)
    for m in c.members.values():
        m.snapshot_every = 10
    c.elect(1)
    c.crash(3)
    for i in range(50):
        c.propose(1, b"w%d" % i)
        c.stabilize()
    assert c[1].log.offset > 0, "the leader should have compacted its log"
    c.restart(3)
    c.tick([1], n=2)
    c.stabilize()
    assert c[3].log.snapshot.index > 0, "member 3 should have installed a snapshot"
    assert c[3].commit == c[1].commit
    assert applied_writes(c, 3) == applied_writes(c, 1)


def test_follower_keeps_its_log_when_the_snapshot_matches_it() -> None:
    c = Cluster(3)
    c.elect(1)
    for i in range(5):
        write(c, 1, b"w%d" % i)
    follower = c[2]
    last = follower.last_index()
    meta = SnapshotMeta(3, follower.log.term(3) or 0, follower.conf)
    snap = Message(MT.SNAP, 2, 1, c[1].term, snapshot=Snapshot(meta, b""))
    follower.step(snap)
    assert follower.last_index() == last, "a matching snapshot must not discard the log"


# -- leadership transfer ------------------------------------------------------------------


def test_transfer_to_a_lagging_follower_brings_it_up_to_date_first() -> None:
    c = Cluster(3)
    c.elect(1)
    c.isolate(3)
    for i in range(10):
        c.propose(1, b"w%d" % i)
    c.stabilize()
    c.heal()
    c[1].transfer_leader(3)
    with pytest.raises(ProposalDropped):
        c[1].propose([b"w-during-transfer"])
    c.stabilize()
    assert c[3].role == Role.LEADER
    assert len(applied_writes(c, 3)) == 10


def test_transfer_aborts_after_an_election_timeout() -> None:
    c = Cluster(3)
    c.elect(1)
    c.isolate(3)
    c[1].transfer_leader(3)
    c.stabilize()
    assert c[1].lead_transferee == 3
    c.tick([1, 2], n=c[1].cfg.election_tick)
    c.stabilize()
    assert c[1].role == Role.LEADER and c[1].lead_transferee == 0
    write(c, 1, b"w-after-abort")


# -- reads --------------------------------------------------------------------------------


def test_reads_wait_for_the_leaders_first_commit_and_share_one_heartbeat_round() -> None:
    c = Cluster(3)
    c[1].campaign()
    c.stabilize()
    lead = c.members[1]
    sent_before = len(c.net.queue)
    for i in range(50):
        c.read(1, b"r%d" % i)
    rd = c[1].ready()
    heartbeats = [m for m in rd.messages if m.type == MT.HEARTBEAT]
    assert len(heartbeats) == 2, "fifty reads should share one heartbeat per follower"
    assert sent_before == 0
    lead.ready = rd
    lead.phase = 1
    c.send(1, rd.messages)
    c.stabilize()
    assert not lead.waiting_reads, "reads were not released"


def _settle(c: Cluster, node_id: int) -> None:
    """Run one member until it has nothing left to do, delivering nothing."""
    while c.members[node_id].run_phase():
        pass


def _in_flight(c: Cluster, kind: MessageType) -> list[Message]:
    return [m for _, _, m in c.net.queue if m.type == kind]


def _leader_with_a_round_out(read: bytes) -> Cluster:
    """Three members; the leader, 1, has sent the heartbeats of the round for ``read``."""
    c = Cluster(3)
    c.elect(1)
    write(c, 1, b"w1")
    c.read(1, read)
    _settle(c, 1)
    return c


def test_a_read_during_a_round_waits_for_the_next_which_carries_every_members_reads() -> None:
    c = _leader_with_a_round_out(b"r-leader")
    assert len(_in_flight(c, MT.HEARTBEAT)) == 2, "the first read starts a round"
    c.read(2, b"r-follower")
    _settle(c, 2)
    c.deliver_all()  # round A's heartbeats to the followers, the follower's request to 1
    _settle(c, 1)
    assert _in_flight(c, MT.HEARTBEAT) == [], (
        "a read that came while round A was out must not start a round of its own"
    )
    _settle(c, 2)
    _settle(c, 3)
    c.deliver_all()  # the echoes of round A
    _settle(c, 1)
    assert b"r-leader" not in c.members[1].waiting_reads, "round A did not release its read"
    assert b"r-follower" in c.members[2].waiting_reads, "round A left before it came"
    round_b = _in_flight(c, MT.HEARTBEAT)
    assert len(round_b) == 2, "round A confirmed: round B starts at once for the read waiting"
    assert _in_flight(c, MT.READ_INDEX_RESP) == []
    c.stabilize()
    assert not c.members[2].waiting_reads, "round B did not release the follower's read"
    assert c.reads_checked == 2


def test_a_tick_round_carries_the_reads_waiting_for_the_next_one() -> None:
    c = _leader_with_a_round_out(b"r1")
    c.net.queue.clear()  # round A's heartbeats are lost: it is never confirmed
    c.read(1, b"r2")
    _settle(c, 1)
    assert _in_flight(c, MT.HEARTBEAT) == []
    c.tick([1], n=c[1].cfg.heartbeat_tick)  # the periodic heartbeat is the next round
    assert not c.members[1].waiting_reads, "the reads were not released by the tick's round"


def test_follower_reads_are_linearizable_through_the_leader() -> None:
    c = Cluster(3)
    c.elect(1)
    write(c, 1, b"w1")
    c.read(2, b"r-follower")
    c.stabilize()
    assert not c.members[2].waiting_reads
    assert c.reads_checked == 1


def test_lease_reads_skip_the_round_but_not_during_a_transfer() -> None:
    c = Cluster(3, lease_reads=True)
    c.tick(n=12)  # past the quiet period after start
    c.elect(1)
    c.tick([1], n=2)
    c.stabilize()
    assert c[1].has_lease()
    c[1].read_index(b"r-lease")
    rd = c[1].ready()
    assert not [m for m in rd.messages if m.type == MT.HEARTBEAT]
    assert rd.read_states and rd.read_states[0].contexts == (b"r-lease",)
    c[1].advance(rd)
    c[1].transfer_leader(2)
    assert not c[1].has_lease()


def test_a_forgotten_lease_is_not_renewed_by_a_round_started_before_it() -> None:
    # The driver forgets the lease when its process stood still longer than its ticks
    # catch up on. Echoes of a round that left before the pause prove nothing about now.
    c = Cluster(3, lease_reads=True)
    c.tick(n=12)
    c.elect(1)
    c.tick([1], n=2)
    assert c[1].has_lease()
    lead = c.members[1]
    c[1].tick()  # a heartbeat round leaves...
    rd = c[1].ready()
    assert [m for m in rd.messages if m.type == MT.HEARTBEAT]
    lead.ready = rd
    lead.phase = 1
    c.send(1, rd.messages)
    c[1].forget_lease()  # ...and the process pauses before its echoes arrive
    assert not c[1].has_lease()
    c.stabilize()
    assert not c[1].has_lease(), "a round from before the pause renewed the lease"
    c[1].read_index(b"r-after-pause")
    rd = c[1].ready()
    assert not rd.read_states, "a read was released without a round"
    assert [m for m in rd.messages if m.type == MT.HEARTBEAT]
    lead.ready = rd
    lead.phase = 1
    c.send(1, rd.messages)
    c.stabilize()
    assert c[1].has_lease(), "a round started after the pause grants the lease again"


def test_a_driver_catches_up_on_a_few_missed_ticks_and_skips_many() -> None:
    assert catch_up(1) == (1, False)
    assert catch_up(MAX_CATCH_UP_TICKS) == (MAX_CATCH_UP_TICKS, False)
    assert catch_up(MAX_CATCH_UP_TICKS + 1) == (1, True)
    assert catch_up(10_000) == (1, True)


def test_a_member_restarted_without_lease_reads_does_not_unseat_a_leasing_leader() -> None:
    # Turning lease reads off member by member: the leader still answers from its lease while
    # a follower restarted without the flag forgot that it acknowledged that lease.
    c = Cluster(3, config=lambda i: Config(i, lease_reads=i == 1))
    c.elect(1)
    c.tick([1], n=2)
    c.stabilize()
    assert c[1].has_lease()
    c.crash(3)
    c.restart(3)
    c.partition([1], [2, 3])
    c[2].campaign()
    c.stabilize()
    assert c[2].role != Role.LEADER, "a restarted member voted at once"
    assert c[1].has_lease()
    # One election timeout after its restart the member votes again.
    lead = elect_among(c, [2, 3])
    assert c[lead].term > c[1].term


def test_a_new_cluster_elects_without_waiting_out_the_quiet_period() -> None:
    c = Cluster(3)
    c[1].campaign()
    c.stabilize()
    assert c.leader() == 1


def test_read_without_leader_is_refused() -> None:
    c = Cluster(3)
    with pytest.raises(ProposalDropped):
        c[1].read_index(b"r")


def test_no_campaign_while_a_committed_configuration_change_is_unapplied() -> None:
    c = Cluster(3, spares=1)
    c.elect(1)
    c[1].propose_conf_change({1, 2, 3}, {4})
    c.stabilize()
    follower = c[2]
    conf_index = follower.last_index()
    assert follower.log.entries[-1].type == EntryType.CONF_CHANGE
    assert follower.commit == conf_index
    # As if the application had not applied the change yet when the election timer fired.
    follower.log.applied = conf_index - 1
    term = follower.term
    follower.campaign()
    assert follower.role == Role.FOLLOWER and follower.term == term


def test_reads_still_confirm_after_a_single_voter_grows() -> None:
    # A single voter confirms reads alone; a learner's heartbeat echoes must not mark every
    # future round confirmed, or reads hang once the learner becomes a voter.
    c = Cluster(1, spares=1)
    c.elect(1)
    write(c, 1, b"w1")
    c[1].propose_conf_change({1}, {2})
    c.stabilize()
    c.tick([1], n=2)  # heartbeats to the learner, echoed
    c.stabilize()
    c[1].propose_conf_change({1, 2})
    c.stabilize()
    assert c[1].conf.voters == {1, 2} and not c[1].conf.joint
    c.read(1, b"after-growing")
    c.read(2, b"follower-after-growing")
    c.stabilize()
    c.tick([1], n=2)
    c.stabilize()
    assert not c.members[1].waiting_reads, "the leader's read was never confirmed"
    assert not c.members[2].waiting_reads, "the follower's read was never confirmed"


def test_reads_after_shrinking_to_one_voter_and_growing_back() -> None:
    """3 -> 1 -> 3: a late heartbeat echo while the leader alone is a quorum must not confirm
    rounds that have not started yet; reads in the grown cluster are released again."""
    c = Cluster(3, spares=2)
    c.elect(1)
    write(c, 1, b"w1")
    c[1].propose_conf_change({1})
    c.stabilize()
    c.tick(n=30)  # the departing members keep hearing heartbeats, and echo them
    c.stabilize()
    assert c[1].conf.voters == {1}
    c.read(1, b"r-alone")
    c.stabilize()
    assert not c.members[1].waiting_reads
    c[1].propose_conf_change({1}, {4, 5})
    c.stabilize()
    c[1].propose_conf_change({1, 4, 5})
    c.stabilize()
    assert c[1].conf.voters == {1, 4, 5} and not c[1].conf.joint
    c.read(1, b"r-three")
    c.stabilize()
    c.tick([1], n=c[1].cfg.heartbeat_tick)
    c.stabilize()
    assert not c.members[1].waiting_reads, "the read after growing back was never released"
