"""Lease and lock workloads, and what they must never show.

Leases: a worker grants a lease, attaches a key, keeps it alive for a while, then abandons
it. While a keep-alive answered with a TTL, a read invoked within that TTL (from the
keep-alive's invocation) must find the key; once the cluster is healed, every abandoned
lease must expire within a bounded time and take its key with it, on every member.

Locks: workers contend for one lock (etcd's Lock service) with a lease each. The fencing
token of a holder is its lock key's create revision. Tokens of acquisitions that do not
overlap in time increase in the order of the acquisitions, and no two holders hold the lock
at the same time while both their leases are certainly valid (from the acquisition until
the release, or until the last keep-alive's invocation plus its TTL, if sooner).
"""

from __future__ import annotations

import contextlib
import itertools
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc

from flotilla.node.api.etcdpb import rpc_pb2 as pb
from flotilla.node.api.etcdpb import rpc_pb2_grpc as rpc
from flotilla.node.api.etcdpb import v3lock_pb2 as lockpb
from flotilla.node.api.etcdpb import v3lock_pb2_grpc as lockrpc

TTL = 3


def keep_alive(channel: grpc.Channel, lease: int) -> int:
    """One keep-alive; the TTL granted (0 or less: the lease is gone)."""
    req = pb.LeaseKeepAliveRequest(ID=lease)
    call = rpc.LeaseStub(channel).LeaseKeepAlive(iter([req]), timeout=2)
    try:
        for resp in call:
            return int(resp.TTL)
    finally:
        call.cancel()
    raise grpc.RpcError("keep-alive stream ended without an answer")


@dataclass
class LeaseRecord:
    lease: int
    key: bytes
    abandoned: bool = False


@dataclass
class Hold:
    worker: int
    token: int
    acquire_call: float
    acquire_ret: float
    valid_until: float


class _Worker:
    def __init__(self, endpoints: list[str], seed: int) -> None:
        self.endpoints = endpoints
        self.rng = random.Random(seed)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.anomalies: list[str] = []
        self.errors = 0

    def _channel(self) -> grpc.Channel:
        return grpc.insecure_channel(self.rng.choice(self.endpoints))

    def _spawn(self, target: Callable[[int], None], n: int) -> None:
        for i in range(n):
            t = threading.Thread(target=target, args=(i,), daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=15)


class LeaseWorkload(_Worker):
    def __init__(self, endpoints: list[str], seed: int, prefix: bytes) -> None:
        super().__init__(endpoints, seed)
        self.prefix = prefix
        self.records: list[LeaseRecord] = []
        self.checked_live = 0
        self._keys = itertools.count()

    def start(self, workers: int = 2) -> None:
        self._spawn(self._run, workers)

    def _run(self, worker: int) -> None:
        while not self._stop.is_set():
            ch = self._channel()
            try:
                self._one_lease(ch)
            except grpc.RpcError:
                self.errors += 1
                self._stop.wait(0.2)
            finally:
                ch.close()

    def _one_lease(self, ch: grpc.Channel) -> None:
        kv, leases = rpc.KVStub(ch), rpc.LeaseStub(ch)
        lease = leases.LeaseGrant(pb.LeaseGrantRequest(TTL=TTL), timeout=2).ID
        key = self.prefix + b"%d" % next(self._keys)
        record = LeaseRecord(lease, key)
        self.records.append(record)  # from the grant on: if the put happened, it must go too
        try:
            kv.Put(pb.PutRequest(key=key, value=b"x", lease=lease), timeout=2)
            until = time.monotonic() + self.rng.uniform(1, 5)
            while time.monotonic() < until and not self._stop.is_set():
                call = time.monotonic()
                ttl = keep_alive(ch, lease)
                if ttl <= 0:
                    return  # expired meanwhile (e.g. a long partition): allowed
                resp = kv.Range(pb.RangeRequest(key=key), timeout=1)
                if time.monotonic() < call + ttl and not resp.kvs:
                    self.anomalies.append(
                        f"key {key!r} of lease {lease:x} missing while the lease was live "
                        f"(keep-alive granted {ttl}s)"
                    )
                self.checked_live += 1
                self._stop.wait(0.5)
        finally:
            record.abandoned = True

    def check_expired(self, endpoints: list[str], timeout: float = TTL + 20) -> None:
        """Every abandoned lease's key is gone from every member within ``timeout``."""
        deadline = time.monotonic() + timeout
        for record in self.records:
            for ep in endpoints:
                while True:
                    with grpc.insecure_channel(ep) as ch:
                        try:
                            req = pb.RangeRequest(key=record.key, serializable=True)
                            present = bool(rpc.KVStub(ch).Range(req, timeout=2).kvs)
                        except grpc.RpcError:
                            present = True  # ask again
                    if not present:
                        break
                    if time.monotonic() > deadline:
                        self.anomalies.append(
                            f"key {record.key!r} of abandoned lease {record.lease:x} still on "
                            f"{ep} {timeout:.0f}s after healing"
                        )
                        break
                    time.sleep(0.2)


@dataclass
class LockWorkload(_Worker):
    endpoints: list[str]
    seed: int
    name: bytes
    holds: list[Hold] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__init__(self.endpoints, self.seed)

    def start(self, workers: int = 3) -> None:
        self._spawn(self._run, workers)

    def _run(self, worker: int) -> None:
        while not self._stop.is_set():
            ch = self._channel()
            try:
                self._one_hold(ch, worker)
            except grpc.RpcError:
                self.errors += 1
                self._stop.wait(0.2)
            finally:
                ch.close()

    def _one_hold(self, ch: grpc.Channel, worker: int) -> None:
        kv, leases, locks = rpc.KVStub(ch), rpc.LeaseStub(ch), lockrpc.LockStub(ch)
        # The leader counts the TTL from when it grants, which is after this moment.
        ttl_from = time.monotonic()
        lease = leases.LeaseGrant(pb.LeaseGrantRequest(TTL=TTL), timeout=2).ID
        try:
            call = time.monotonic()
            got = locks.Lock(lockpb.LockRequest(name=self.name, lease=lease), timeout=3)
            ret = time.monotonic()
            owner = kv.Range(pb.RangeRequest(key=got.key), timeout=2)
            if not owner.kvs:
                return  # the lease expired right after: never held in a way we can check
            token = owner.kvs[0].create_revision
            valid_until = ttl_from + TTL
            until = ret + self.rng.uniform(0.1, 1.0)
            while time.monotonic() < until:
                ka_call = time.monotonic()
                try:
                    ttl = keep_alive(ch, lease)
                except grpc.RpcError:
                    break
                if ttl <= 0:
                    break
                valid_until = max(valid_until, ka_call + ttl)
                self._stop.wait(0.2)
            release = time.monotonic()
            hold = Hold(worker, token, call, ret, min(release, valid_until))
            self.holds.append(hold)
            # If these fail, the lease expires and releases the lock all the same.
            with contextlib.suppress(grpc.RpcError):
                locks.Unlock(lockpb.UnlockRequest(key=got.key), timeout=2)
        finally:
            with contextlib.suppress(grpc.RpcError):
                leases.LeaseRevoke(pb.LeaseRevokeRequest(ID=lease), timeout=2)

    def check(self) -> None:
        holds = sorted(self.holds, key=lambda h: h.acquire_ret)
        tokens = [h.token for h in holds]
        if len(set(tokens)) != len(tokens):
            self.anomalies.append("two acquisitions of the lock share a fencing token")
        for a, b in itertools.combinations(holds, 2):
            if a.acquire_ret < b.acquire_call and a.token >= b.token:
                self.anomalies.append(
                    f"fencing token went back: {a.token} (worker {a.worker}) then {b.token} "
                    f"(worker {b.worker})"
                )
            if a.acquire_ret < b.valid_until and b.acquire_ret < a.valid_until:
                self.anomalies.append(
                    f"two holders with valid leases at once: worker {a.worker} (token "
                    f"{a.token}) and worker {b.worker} (token {b.token})"
                )
        del self.anomalies[20:]
