"""A member that missed the configuration change adding the member that now leads.

Down while a fourth member was added, it does not know that member's address when it comes
back; once the newcomer leads and has compacted its log past everything the lagging member
holds, the lagging member can catch up only by answering the newcomer's probes and being
sent its snapshot. It must: members answer whoever writes to them (the sender's stream says
where), not only the members they know of. (The soak found this: a member stayed thousands
of entries behind, for good.)
"""

from __future__ import annotations

import signal
from collections.abc import Callable

import grpc

from flotilla.node.api.etcdpb import rpc_pb2 as pb
from flotilla.node.api.etcdpb import rpc_pb2_grpc as rpc

from .procs import Proc, ProcessCluster, free_ports, wait_for
from .test_snapshot_race import keys_on, put_many

SNAPSHOT_COUNT = 100


def add_voter(c: ProcessCluster, via: Proc) -> tuple[Proc, int]:
    name = f"m{len(c.members) + 1}"
    client, peer, metrics = free_ports(3)
    m = Proc(name, client, peer, metrics, c.root / name, c.root / f"{name}.log")
    # As a learner first: a voter that is not running yet would leave the leader without a
    # quorum of four while another member is down.
    req = pb.MemberAddRequest(peerURLs=[m.peer_url], isLearner=True)
    with grpc.insecure_channel(via.endpoint) as ch:
        added = rpc.ClusterStub(ch).MemberAdd(req, timeout=10)
    c.members.append(m)
    m.initial_state = "existing"
    c.start(m)

    def promoted() -> bool:
        with grpc.insecure_channel(via.endpoint) as ch:
            req = pb.MemberPromoteRequest(ID=added.member.ID)
            rpc.ClusterStub(ch).MemberPromote(req, timeout=10)
        return True

    wait_for(f"{name} to be promoted", promoted, timeout=30)
    return m, added.member.ID


def move_leader(via: Proc, target_id: int) -> None:
    with grpc.insecure_channel(via.endpoint) as ch:
        rpc.MaintenanceStub(ch).MoveLeader(pb.MoveLeaderRequest(targetID=target_id), timeout=10)


def member_id(via: Proc, name: str) -> int:
    with grpc.insecure_channel(via.endpoint) as ch:
        members = rpc.ClusterStub(ch).MemberList(pb.MemberListRequest(), timeout=5).members
    return next(m.ID for m in members if m.name == name)


def test_a_member_that_missed_the_leaders_addition_catches_up(
    make_cluster: Callable[..., ProcessCluster],
) -> None:
    cluster = make_cluster(3, extra_flags=[f"--snapshot-count={SNAPSHOT_COUNT}"])
    lagging = cluster.members[2]
    others = cluster.members[:2]
    leader = cluster.wait_leader()
    if leader is lagging:
        move_leader(leader, member_id(leader, others[0].name))
        leader = cluster.wait_leader(others)
    put_many(leader.endpoint, 0, 10)
    wait_for("the lagging member to hold the first writes", lambda: len(keys_on(lagging)) == 10)

    cluster.kill(lagging, signal.SIGKILL)
    newcomer, newcomer_id = add_voter(cluster, leader)
    wait_for("the newcomer to catch up", lambda: len(keys_on(newcomer)) == 10, timeout=30)
    move_leader(leader, newcomer_id)
    assert cluster.wait_leader([*others, newcomer]) is newcomer
    # Well past what the lagging member holds: it can only be sent a snapshot.
    put_many(newcomer.endpoint, 10, 3 * SNAPSHOT_COUNT)

    cluster.start(lagging)
    expected = keys_on(newcomer)
    wait_for(
        "the lagging member to catch up from the newcomer's snapshot",
        lambda: keys_on(lagging) == expected,
        timeout=30,
    )
    log = lagging.log_path.read_text()
    assert "installed snapshot at index" in log, log[-3000:]
