"""The Election service over real gRPC: campaign, proclaim, leader, observe and resign."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable

import grpc
import pytest

from flotilla.node.api.etcdpb import rpc_pb2 as pb
from flotilla.node.api.etcdpb import rpc_pb2_grpc, v3election_pb2_grpc
from flotilla.node.api.etcdpb import v3election_pb2 as el

WAIT = 10.0


def eventually(what: str, check: Callable[[], bool], timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


def grant(lease: rpc_pb2_grpc.LeaseStub) -> int:
    return int(lease.LeaseGrant(pb.LeaseGrantRequest(TTL=60)).ID)


def etcd_error(call: Callable[[], object]) -> str:
    with pytest.raises(grpc.RpcError) as exc:
        call()
    assert exc.value.code() == grpc.StatusCode.UNKNOWN
    return str(exc.value.details())


class Observer:
    """An Observe stream read on a thread; responses are taken with a bounded wait."""

    def __init__(self, election: v3election_pb2_grpc.ElectionStub, name: bytes) -> None:
        self._call = election.Observe(el.LeaderRequest(name=name))
        self._got: queue.Queue[el.LeaderResponse] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        try:
            for resp in self._call:
                self._got.put(resp)
        except grpc.RpcError:
            pass

    def next(self) -> tuple[bytes, bytes]:
        try:
            resp = self._got.get(timeout=WAIT)
        except queue.Empty:
            raise AssertionError("no leader change observed in time") from None
        assert resp.header.revision >= resp.kv.mod_revision
        return resp.kv.key, resp.kv.value

    def idle(self) -> bool:
        return self._got.empty()

    def close(self) -> None:
        self._call.cancel()


def test_campaign_proclaim_leader_resign(
    election: v3election_pb2_grpc.ElectionStub, lease: rpc_pb2_grpc.LeaseStub
) -> None:
    assert etcd_error(lambda: election.Leader(el.LeaderRequest(name=b"e"))) == (
        "election: no leader"
    )
    lid = grant(lease)
    won = election.Campaign(el.CampaignRequest(name=b"e", lease=lid, value=b"v1"))
    me = won.leader
    assert (me.name, me.key, me.lease) == (b"e", b"e/%x" % lid, lid)
    assert me.rev == won.header.revision

    got = election.Leader(el.LeaderRequest(name=b"e"))
    assert (got.kv.key, got.kv.value, got.kv.create_revision) == (me.key, b"v1", me.rev)

    said = election.Proclaim(el.ProclaimRequest(leader=me, value=b"v2"))
    assert said.header.revision == me.rev + 1
    assert election.Leader(el.LeaderRequest(name=b"e")).kv.value == b"v2"

    gone = election.Resign(el.ResignRequest(leader=me))
    assert gone.header.revision == me.rev + 2
    assert etcd_error(lambda: election.Leader(el.LeaderRequest(name=b"e"))) == (
        "election: no leader"
    )
    # A leader key of a finished term no longer speaks for the election.
    assert etcd_error(lambda: election.Proclaim(el.ProclaimRequest(leader=me, value=b"v3"))) == (
        "election: not leader"
    )


def test_leader_field_is_required(election: v3election_pb2_grpc.ElectionStub) -> None:
    missing = '"leader" field must be provided'
    assert etcd_error(lambda: election.Proclaim(el.ProclaimRequest(value=b"x"))) == missing
    assert etcd_error(lambda: election.Resign(el.ResignRequest())) == missing


def test_second_candidate_waits_for_the_leader_to_resign(
    election: v3election_pb2_grpc.ElectionStub,
    lease: rpc_pb2_grpc.LeaseStub,
    kv: rpc_pb2_grpc.KVStub,
) -> None:
    a, b = grant(lease), grant(lease)
    first = election.Campaign(el.CampaignRequest(name=b"w", lease=a, value=b"a")).leader
    pending = election.Campaign.future(el.CampaignRequest(name=b"w", lease=b, value=b"b"))
    eventually(
        "the second candidate to queue",
        lambda: kv.Range(pb.RangeRequest(key=b"w/%x" % b)).count == 1,
    )
    assert not pending.done()
    # The waiting candidate is not the leader yet: its key does not speak for the election.
    assert election.Leader(el.LeaderRequest(name=b"w")).kv.value == b"a"
    election.Resign(el.ResignRequest(leader=first))
    second = pending.result(timeout=WAIT).leader
    assert second.key == b"w/%x" % b and second.rev > first.rev
    assert election.Leader(el.LeaderRequest(name=b"w")).kv.value == b"b"


def test_campaign_again_keeps_the_place_and_updates_the_value(
    election: v3election_pb2_grpc.ElectionStub, lease: rpc_pb2_grpc.LeaseStub
) -> None:
    lid = grant(lease)
    one = election.Campaign(el.CampaignRequest(name=b"r", lease=lid, value=b"a")).leader
    two = election.Campaign(el.CampaignRequest(name=b"r", lease=lid, value=b"b")).leader
    assert (two.key, two.rev) == (one.key, one.rev)
    assert election.Leader(el.LeaderRequest(name=b"r")).kv.value == b"b"


def test_observe_follows_leaders_and_their_values(
    election: v3election_pb2_grpc.ElectionStub, lease: rpc_pb2_grpc.LeaseStub
) -> None:
    a, b = grant(lease), grant(lease)
    obs = Observer(election, b"o")
    try:
        # No leader yet: the first candidate to appear is reported.
        first = election.Campaign(el.CampaignRequest(name=b"o", lease=a, value=b"a1")).leader
        assert obs.next() == (first.key, b"a1")
        election.Proclaim(el.ProclaimRequest(leader=first, value=b"a2"))
        assert obs.next() == (first.key, b"a2")
        pending = election.Campaign.future(el.CampaignRequest(name=b"o", lease=b, value=b"b1"))
        election.Resign(el.ResignRequest(leader=first))
        second = pending.result(timeout=WAIT).leader
        assert obs.next() == (second.key, b"b1")
        election.Resign(el.ResignRequest(leader=second))
    finally:
        obs.close()
    # A new observer of a current leader gets it at once.
    c = grant(lease)
    third = election.Campaign(el.CampaignRequest(name=b"o", lease=c, value=b"c1")).leader
    late = Observer(election, b"o")
    try:
        assert late.next() == (third.key, b"c1")
    finally:
        late.close()


def test_revoked_candidate_is_not_elected(
    election: v3election_pb2_grpc.ElectionStub,
    lease: rpc_pb2_grpc.LeaseStub,
    kv: rpc_pb2_grpc.KVStub,
) -> None:
    a, b = grant(lease), grant(lease)
    election.Campaign(el.CampaignRequest(name=b"x", lease=a, value=b"a"))
    pending = election.Campaign.future(el.CampaignRequest(name=b"x", lease=b, value=b"b"))
    eventually(
        "the second candidate to queue",
        lambda: kv.Range(pb.RangeRequest(key=b"x/%x" % b)).count == 1,
    )
    lease.LeaseRevoke(pb.LeaseRevokeRequest(ID=b))
    with pytest.raises(grpc.RpcError) as exc:
        pending.result(timeout=WAIT)
    assert exc.value.details() == "session expired"


def test_disconnected_candidate_leaves_the_queue(
    election: v3election_pb2_grpc.ElectionStub,
    lease: rpc_pb2_grpc.LeaseStub,
    kv: rpc_pb2_grpc.KVStub,
) -> None:
    a, b = grant(lease), grant(lease)
    election.Campaign(el.CampaignRequest(name=b"d", lease=a, value=b"a"))
    pending = election.Campaign.future(el.CampaignRequest(name=b"d", lease=b, value=b"b"))
    key = b"d/%x" % b
    eventually("the candidate to queue", lambda: kv.Range(pb.RangeRequest(key=key)).count == 1)
    pending.cancel()
    eventually(
        "the canceled candidate's key to be deleted",
        lambda: kv.Range(pb.RangeRequest(key=key)).count == 0,
    )


def test_requests_are_validated_as_etcd_does(election: v3election_pb2_grpc.ElectionStub) -> None:
    stray = el.LeaderKey(name=b"v", rev=1, lease=1)
    assert etcd_error(lambda: election.Resign(el.ResignRequest(leader=stray))) == (
        "etcdserver: key is not provided"
    )
