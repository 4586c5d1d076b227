"""Locks and elections end to end on three real processes.

``etcdctl lock`` and ``etcdctl elect`` run clientv3/concurrency's recipes over KV, Lease and
Watch; the Lock and Election services run the same recipes inside a member. Both are driven
here, with waiters on one member woken by releases made through another.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import threading

import grpc
import pytest

from flotilla.node.api.etcdpb import rpc_pb2 as pb
from flotilla.node.api.etcdpb import rpc_pb2_grpc, v3election_pb2_grpc, v3lock_pb2_grpc
from flotilla.node.api.etcdpb import v3election_pb2 as el
from flotilla.node.api.etcdpb import v3lock_pb2 as lk

from .procs import ProcessCluster, etcdctl, wait_for

pytestmark = pytest.mark.node

WAIT = 20.0


class Etcdctl:
    """A long-running etcdctl (lock, elect) whose output lines are read with bounded waits."""

    def __init__(self, endpoints: str, *args: str) -> None:
        env = dict(os.environ, ETCDCTL_API="3")
        self.args = " ".join(args)
        self.proc = subprocess.Popen(
            ["etcdctl", f"--endpoints={endpoints}", *args],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def line(self, timeout: float = WAIT) -> str:
        try:
            got = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"etcdctl {self.args}: no output in {timeout}s") from None
        if got is None:
            raise AssertionError(f"etcdctl {self.args} exited: {self.stderr()}")
        return got

    def stderr(self) -> str:
        self.proc.wait(timeout=WAIT)
        assert self.proc.stderr is not None
        return self.proc.stderr.read().strip()

    def silent(self) -> bool:
        """Nothing printed so far, and still running."""
        return self._lines.empty() and self.proc.poll() is None

    def interrupt(self) -> int:
        self.proc.send_signal(signal.SIGINT)
        return self.proc.wait(timeout=WAIT)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def test_etcdctl_lock_holds_until_released(cluster3: ProcessCluster) -> None:
    eps = cluster3.endpoints
    holder = Etcdctl(eps, "lock", "mylock")
    waiter: Etcdctl | None = None
    try:
        key = holder.line()
        assert key.startswith("mylock/"), key
        waiter = Etcdctl(eps, "lock", "mylock", "--", "echo", "hi")
        wait_for(
            "the second etcdctl lock to queue its key",
            lambda: (
                len(etcdctl(eps, "get", "mylock/", "--prefix", "--keys-only").stdout.split()) == 2
            ),
            timeout=WAIT,
        )
        assert waiter.silent(), "the second lock ran while the first was held"
        assert holder.interrupt() == 0
        assert waiter.line() == "hi"
        assert waiter.proc.wait(timeout=WAIT) == 0
        out = etcdctl(eps, "get", "mylock/", "--prefix", "--keys-only").stdout.strip()
        assert out == "", f"lock keys left behind: {out}"
    finally:
        holder.kill()
        if waiter is not None:
            waiter.kill()


def test_etcdctl_elect_and_observe(cluster3: ProcessCluster) -> None:
    eps = cluster3.endpoints
    # Not the first write: see test_etcdctl_elect_as_the_first_write_of_a_new_cluster.
    etcdctl(eps, "put", "unrelated", "x")
    observer = Etcdctl(eps, "elect", "-l", "myelection")
    first = Etcdctl(eps, "elect", "myelection", "v1")
    second: Etcdctl | None = None
    try:
        key = first.line()
        assert key.startswith("myelection/") and first.line() == "v1"
        assert (observer.line(), observer.line()) == (key, "v1")
        second = Etcdctl(eps, "elect", "myelection", "v2")
        wait_for(
            "the second candidate to queue its key",
            lambda: (
                len(etcdctl(eps, "get", "myelection/", "--prefix", "--keys-only").stdout.split())
                == 2
            ),
            timeout=WAIT,
        )
        assert second.silent(), "a second leader was elected while the first leads"
        assert first.interrupt() == 0
        key2 = second.line()
        assert key2 != key and second.line() == "v2"
        assert (observer.line(), observer.line()) == (key2, "v2")
    finally:
        for p in (first, second, observer):
            if p is not None:
                p.kill()


def test_lock_and_election_services_across_members(cluster3: ProcessCluster) -> None:
    """The gRPC services: a waiter on one member is woken by a release through another."""
    leader = cluster3.wait_leader()
    follower = next(m for m in cluster3.members if m is not leader)
    with grpc.insecure_channel(leader.endpoint) as a, grpc.insecure_channel(follower.endpoint) as b:
        lease_a, lease_b = rpc_pb2_grpc.LeaseStub(a), rpc_pb2_grpc.LeaseStub(b)
        la, lb = (
            lease_a.LeaseGrant(pb.LeaseGrantRequest(TTL=30)).ID,
            lease_b.LeaseGrant(pb.LeaseGrantRequest(TTL=30)).ID,
        )
        lock_a, lock_b = v3lock_pb2_grpc.LockStub(a), v3lock_pb2_grpc.LockStub(b)
        held = lock_a.Lock(lk.LockRequest(name=b"svc-lock", lease=la), timeout=WAIT)
        pending = lock_b.Lock.future(lk.LockRequest(name=b"svc-lock", lease=lb), timeout=WAIT)
        kv_b = rpc_pb2_grpc.KVStub(b)
        wait_for(
            "the follower's waiter to queue",
            lambda: kv_b.Range(pb.RangeRequest(key=b"svc-lock/%x" % lb)).count == 1,
            timeout=WAIT,
        )
        assert not pending.done()
        lock_a.Unlock(lk.UnlockRequest(key=held.key), timeout=WAIT)
        got = pending.result(timeout=WAIT)
        assert got.key == b"svc-lock/%x" % lb
        fence = kv_b.Range(pb.RangeRequest(key=got.key)).kvs[0].create_revision
        assert fence > held.header.revision

        elect_a, elect_b = v3election_pb2_grpc.ElectionStub(a), v3election_pb2_grpc.ElectionStub(b)
        observed = elect_b.Observe(el.LeaderRequest(name=b"svc-elect"), timeout=WAIT)
        won = elect_a.Campaign(
            el.CampaignRequest(name=b"svc-elect", lease=la, value=b"one"), timeout=WAIT
        ).leader
        first = next(observed)
        assert (first.kv.key, first.kv.value) == (won.key, b"one")
        elect_a.Proclaim(el.ProclaimRequest(leader=won, value=b"two"), timeout=WAIT)
        assert next(observed).kv.value == b"two"
        assert elect_b.Leader(el.LeaderRequest(name=b"svc-elect"), timeout=WAIT).kv.value == (
            b"two"
        )
        elect_a.Resign(el.ResignRequest(leader=won), timeout=WAIT)
        with pytest.raises(grpc.RpcError) as exc:
            elect_b.Leader(el.LeaderRequest(name=b"svc-elect"), timeout=WAIT)
        assert exc.value.code() == grpc.StatusCode.UNKNOWN
        assert exc.value.details() == "election: no leader"
        observed.cancel()


def test_etcdctl_elect_as_the_first_write_of_a_new_cluster(cluster3: ProcessCluster) -> None:
    first = Etcdctl(cluster3.endpoints, "elect", "first-election", "v1")
    try:
        assert first.line(timeout=5).startswith("first-election/")
    finally:
        first.kill()
