"""etcd's Lock and Election gRPC services, called directly against both clusters.

``etcdctl lock`` and ``etcdctl elect`` (3.4) never call these services: they run the same
recipes on the client over KV, Lease and Watch. Clients such as the Go ``v3lock`` and
``v3election`` clients, and grpc-gateway users, do call them.
"""

from __future__ import annotations

import grpc
import pytest

from flotilla.node.api.etcdpb import (
    rpc_pb2,
    rpc_pb2_grpc,
    v3election_pb2,
    v3election_pb2_grpc,
    v3lock_pb2,
    v3lock_pb2_grpc,
)

from .clusters import Target
from .compare import Norm, same

pytestmark = pytest.mark.compat

Targets = dict[str, Target]


def grant(ch: grpc.Channel, ttl: int = 60) -> int:
    resp = rpc_pb2_grpc.LeaseStub(ch).LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=ttl), timeout=5)
    return int(resp.ID)


def revoke(ch: grpc.Channel, lease: int) -> None:
    rpc_pb2_grpc.LeaseStub(ch).LeaseRevoke(rpc_pb2.LeaseRevokeRequest(ID=lease), timeout=5)


def test_lock_service(targets: Targets) -> None:
    def scenario(t: Target) -> object:
        n = Norm(t)
        with grpc.insecure_channel(t.member_endpoints[0]) as ch:
            lease = grant(ch)
            try:
                stub = v3lock_pb2_grpc.LockStub(ch)
                locked = stub.Lock(v3lock_pb2.LockRequest(name=b"gl", lease=lease), timeout=5)
                key = locked.key.decode()
                held = key == f"gl/{lease:x}"
                stub.Unlock(v3lock_pb2.UnlockRequest(key=locked.key), timeout=5)
                return held, n.rev(locked.header.revision)
            finally:
                revoke(ch, lease)

    assert same(targets, scenario) == (True, 1)


def test_election_service(targets: Targets) -> None:
    def scenario(t: Target) -> object:
        n = Norm(t)
        with grpc.insecure_channel(t.member_endpoints[0]) as ch:
            lease = grant(ch)
            try:
                stub = v3election_pb2_grpc.ElectionStub(ch)
                won = stub.Campaign(
                    v3election_pb2.CampaignRequest(name=b"ge", lease=lease, value=b"v1"),
                    timeout=5,
                )
                leader = won.leader
                stub.Proclaim(v3election_pb2.ProclaimRequest(leader=leader, value=b"v2"), timeout=5)
                now = stub.Leader(v3election_pb2.LeaderRequest(name=b"ge"), timeout=5)
                stub.Resign(v3election_pb2.ResignRequest(leader=leader), timeout=5)
                try:
                    stub.Leader(v3election_pb2.LeaderRequest(name=b"ge"), timeout=5)
                    after = "a leader"
                except grpc.RpcError as err:
                    after = f"{err.code().name}: {err.details()}"
                return (
                    leader.key.decode() == f"ge/{lease:x}",
                    n.rev(leader.rev),
                    now.kv.value.decode(),
                    after,
                )
            finally:
                revoke(ch, lease)

    assert same(targets, scenario) == (
        True,
        1,
        "v2",
        "UNKNOWN: election: no leader",
    )
