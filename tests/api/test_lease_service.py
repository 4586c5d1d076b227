"""The Lease service over real gRPC, with expiry driven by the member's leader duties."""

from __future__ import annotations

import time

import grpc
import pytest
from member import MEMBER_ID, Served

from flotilla.node.api.etcdpb import rpc_pb2 as pb
from flotilla.node.api.etcdpb import rpc_pb2_grpc


def test_grant_attach_time_to_live_revoke(
    lease: rpc_pb2_grpc.LeaseStub, kv: rpc_pb2_grpc.KVStub, served: Served
) -> None:
    base = served.revision()
    g = lease.LeaseGrant(pb.LeaseGrantRequest(TTL=60))
    assert g.ID > 0 and g.TTL == 60 and g.header.member_id == MEMBER_ID
    kv.Put(pb.PutRequest(key=b"a", value=b"1", lease=g.ID))
    kv.Put(pb.PutRequest(key=b"b", value=b"1", lease=g.ID))
    ttl = lease.LeaseTimeToLive(pb.LeaseTimeToLiveRequest(ID=g.ID, keys=True))
    assert ttl.grantedTTL == 60 and 58 <= ttl.TTL <= 60 and list(ttl.keys) == [b"a", b"b"]
    assert [s.ID for s in lease.LeaseLeases(pb.LeaseLeasesRequest()).leases] == [g.ID]
    r = lease.LeaseRevoke(pb.LeaseRevokeRequest(ID=g.ID))
    assert r.header.revision == base + 3
    assert kv.Range(pb.RangeRequest(key=b"a", range_end=b"c")).count == 0
    assert lease.LeaseTimeToLive(pb.LeaseTimeToLiveRequest(ID=g.ID)).TTL == -1


def test_lease_errors(lease: rpc_pb2_grpc.LeaseStub) -> None:
    lease.LeaseGrant(pb.LeaseGrantRequest(TTL=10, ID=5))
    with pytest.raises(grpc.RpcError) as exc:
        lease.LeaseGrant(pb.LeaseGrantRequest(TTL=10, ID=5))
    assert exc.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert exc.value.details() == "etcdserver: lease already exists"
    with pytest.raises(grpc.RpcError) as exc:
        lease.LeaseRevoke(pb.LeaseRevokeRequest(ID=6))
    assert exc.value.code() == grpc.StatusCode.NOT_FOUND
    assert exc.value.details() == "etcdserver: requested lease not found"
    with pytest.raises(grpc.RpcError) as exc:
        lease.LeaseGrant(pb.LeaseGrantRequest(TTL=9_000_000_001))
    assert exc.value.code() == grpc.StatusCode.OUT_OF_RANGE
    assert exc.value.details() == "etcdserver: too large lease TTL"


def test_keep_alive_stream(lease: rpc_pb2_grpc.LeaseStub) -> None:
    g = lease.LeaseGrant(pb.LeaseGrantRequest(TTL=30, ID=77))
    reqs = [pb.LeaseKeepAliveRequest(ID=g.ID), pb.LeaseKeepAliveRequest(ID=404)] * 2
    got = [(r.ID, r.TTL) for r in lease.LeaseKeepAlive(iter(reqs))]
    assert got == [(77, 30), (404, 0), (77, 30), (404, 0)]


def test_expired_lease_deletes_its_keys(
    lease: rpc_pb2_grpc.LeaseStub, kv: rpc_pb2_grpc.KVStub
) -> None:
    g = lease.LeaseGrant(pb.LeaseGrantRequest(TTL=1))
    assert g.TTL == 2  # raised to the minimum TTL
    kv.Put(pb.PutRequest(key=b"eph", value=b"x", lease=g.ID))
    kept = lease.LeaseGrant(pb.LeaseGrantRequest(TTL=2))
    kv.Put(pb.PutRequest(key=b"kept", value=b"x", lease=kept.ID))
    deadline = time.monotonic() + 6
    while time.monotonic() < deadline:
        list(lease.LeaseKeepAlive(iter([pb.LeaseKeepAliveRequest(ID=kept.ID)])))
        if kv.Range(pb.RangeRequest(key=b"eph")).count == 0:
            break
        time.sleep(0.2)
    assert kv.Range(pb.RangeRequest(key=b"eph")).count == 0
    assert kv.Range(pb.RangeRequest(key=b"kept")).count == 1
    assert lease.LeaseTimeToLive(pb.LeaseTimeToLiveRequest(ID=g.ID)).TTL == -1
