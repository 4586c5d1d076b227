"""The Lock service over real gRPC: queueing, fencing revisions, expiry and release."""

from __future__ import annotations

import time
from collections.abc import Callable

import grpc
import pytest
from member import MEMBER_ID

from flotilla.node.api.etcdpb import rpc_pb2 as pb
from flotilla.node.api.etcdpb import rpc_pb2_grpc, v3lock_pb2_grpc
from flotilla.node.api.etcdpb import v3lock_pb2 as lk

WAIT = 10.0


def eventually(what: str, check: Callable[[], bool], timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


def grant(lease: rpc_pb2_grpc.LeaseStub, ttl: int = 60) -> int:
    return int(lease.LeaseGrant(pb.LeaseGrantRequest(TTL=ttl)).ID)


def queued(kv: rpc_pb2_grpc.KVStub, key: bytes) -> Callable[[], bool]:
    return lambda: kv.Range(pb.RangeRequest(key=key)).count == 1


def create_revision(kv: rpc_pb2_grpc.KVStub, key: bytes) -> int:
    return int(kv.Range(pb.RangeRequest(key=key)).kvs[0].create_revision)


def test_uncontended_lock_returns_the_key_and_unlock_deletes_it(
    lock: v3lock_pb2_grpc.LockStub, lease: rpc_pb2_grpc.LeaseStub, kv: rpc_pb2_grpc.KVStub
) -> None:
    lid = grant(lease)
    got = lock.Lock(lk.LockRequest(name=b"mylock", lease=lid))
    assert got.key == b"mylock/%x" % lid
    assert got.header.member_id == MEMBER_ID
    held = kv.Range(pb.RangeRequest(key=got.key)).kvs[0]
    assert held.lease == lid and held.create_revision == got.header.revision
    # The same session locking again gets the same key back at once.
    assert lock.Lock(lk.LockRequest(name=b"mylock", lease=lid)).key == got.key
    done = lock.Unlock(lk.UnlockRequest(key=got.key))
    assert done.header.revision == held.create_revision + 1
    assert kv.Range(pb.RangeRequest(key=got.key)).count == 0


def test_waiters_queue_in_order_and_fencing_revisions_increase(
    lock: v3lock_pb2_grpc.LockStub, lease: rpc_pb2_grpc.LeaseStub, kv: rpc_pb2_grpc.KVStub
) -> None:
    a, b, c = grant(lease), grant(lease), grant(lease)
    first = lock.Lock(lk.LockRequest(name=b"q", lease=a))
    second = lock.Lock.future(lk.LockRequest(name=b"q", lease=b))
    eventually("the second waiter to queue", queued(kv, b"q/%x" % b))
    third = lock.Lock.future(lk.LockRequest(name=b"q", lease=c))
    eventually("the third waiter to queue", queued(kv, b"q/%x" % c))
    assert not second.done() and not third.done()

    lock.Unlock(lk.UnlockRequest(key=first.key))
    got2 = second.result(timeout=WAIT)
    assert got2.key == b"q/%x" % b
    assert not third.done(), "the third waiter got the lock while the second holds it"

    lock.Unlock(lk.UnlockRequest(key=got2.key))
    got3 = third.result(timeout=WAIT)
    assert got3.key == b"q/%x" % c
    fences = [create_revision(kv, got3.key)]
    lock.Unlock(lk.UnlockRequest(key=got3.key))
    # Each later holder's key was created later: its revision fences out earlier holders.
    again = lock.Lock(lk.LockRequest(name=b"q", lease=a))
    fences.append(create_revision(kv, again.key))
    assert fences[0] > first.header.revision and fences[1] > fences[0]


def test_lease_revoked_while_waiting_fails_with_session_expired(
    lock: v3lock_pb2_grpc.LockStub, lease: rpc_pb2_grpc.LeaseStub, kv: rpc_pb2_grpc.KVStub
) -> None:
    holder, waiter = grant(lease), grant(lease)
    held = lock.Lock(lk.LockRequest(name=b"x", lease=holder))
    pending = lock.Lock.future(lk.LockRequest(name=b"x", lease=waiter))
    eventually("the waiter to queue", queued(kv, b"x/%x" % waiter))
    lease.LeaseRevoke(pb.LeaseRevokeRequest(ID=waiter))
    # The wait ends at once, while the holder still holds the lock.
    with pytest.raises(grpc.RpcError) as exc:
        pending.result(timeout=WAIT)
    assert exc.value.code() == grpc.StatusCode.UNKNOWN
    assert exc.value.details() == "session expired"
    assert kv.Range(pb.RangeRequest(key=held.key)).count == 1


def test_expired_holder_frees_the_lock(
    lock: v3lock_pb2_grpc.LockStub, lease: rpc_pb2_grpc.LeaseStub, kv: rpc_pb2_grpc.KVStub
) -> None:
    short, waiter = grant(lease, ttl=2), grant(lease)
    lock.Lock(lk.LockRequest(name=b"e", lease=short))
    got = lock.Lock(lk.LockRequest(name=b"e", lease=waiter), timeout=WAIT)
    assert got.key == b"e/%x" % waiter


def test_disconnected_waiter_leaves_the_queue(
    lock: v3lock_pb2_grpc.LockStub, lease: rpc_pb2_grpc.LeaseStub, kv: rpc_pb2_grpc.KVStub
) -> None:
    holder, gone, next_ = grant(lease), grant(lease), grant(lease)
    held = lock.Lock(lk.LockRequest(name=b"d", lease=holder))
    pending = lock.Lock.future(lk.LockRequest(name=b"d", lease=gone))
    eventually("the waiter to queue", queued(kv, b"d/%x" % gone))
    pending.cancel()
    eventually("the canceled waiter's key to be deleted", lambda: not queued(kv, b"d/%x" % gone)())
    after = lock.Lock.future(lk.LockRequest(name=b"d", lease=next_))
    eventually("the next waiter to queue", queued(kv, b"d/%x" % next_))
    lock.Unlock(lk.UnlockRequest(key=held.key))
    assert after.result(timeout=WAIT).key == b"d/%x" % next_


def test_lock_without_lease_grants_a_session_lease(
    lock: v3lock_pb2_grpc.LockStub, lease: rpc_pb2_grpc.LeaseStub, kv: rpc_pb2_grpc.KVStub
) -> None:
    got = lock.Lock(lk.LockRequest(name=b"n"))
    held = kv.Range(pb.RangeRequest(key=got.key)).kvs[0]
    assert held.lease != 0 and got.key == b"n/%x" % held.lease
    ttl = lease.LeaseTimeToLive(pb.LeaseTimeToLiveRequest(ID=held.lease))
    assert ttl.grantedTTL == 60


def test_lock_with_unknown_lease_is_etcds_error(lock: v3lock_pb2_grpc.LockStub) -> None:
    with pytest.raises(grpc.RpcError) as exc:
        lock.Lock(lk.LockRequest(name=b"u", lease=12345))
    assert exc.value.code() == grpc.StatusCode.UNKNOWN
    assert exc.value.details() == "etcdserver: requested lease not found"


def test_unlock_of_nothing_is_not_an_error_but_an_empty_key_is(
    lock: v3lock_pb2_grpc.LockStub,
) -> None:
    # Nothing changed: the header shows a fresh store's revision, 1 (as etcd).
    assert lock.Unlock(lk.UnlockRequest(key=b"never/held")).header.revision == 1
    with pytest.raises(grpc.RpcError) as exc:
        lock.Unlock(lk.UnlockRequest(key=b""))
    assert exc.value.code() == grpc.StatusCode.UNKNOWN
    assert exc.value.details() == "etcdserver: key is not provided"


def test_a_long_queue_is_served_one_holder_at_a_time_in_order(
    lock: v3lock_pb2_grpc.LockStub, lease: rpc_pb2_grpc.LeaseStub, kv: rpc_pb2_grpc.KVStub
) -> None:
    leases = [grant(lease) for _ in range(12)]
    held = lock.Lock(lk.LockRequest(name=b"long", lease=leases[0]))
    waiting = []
    for lid in leases[1:]:
        waiting.append(lock.Lock.future(lk.LockRequest(name=b"long", lease=lid)))
        eventually("a waiter to queue", queued(kv, b"long/%x" % lid))
    for i, fut in enumerate(waiting):
        lock.Unlock(lk.UnlockRequest(key=held.key))
        held = fut.result(timeout=WAIT)
        assert held.key == b"long/%x" % leases[i + 1]
        assert not any(f.done() for f in waiting[i + 1 :]), "two holders at once"
    lock.Unlock(lk.UnlockRequest(key=held.key))
