"""Members crashed at each crash point recover without losing or repeating anything.

The members run with ``FLOTILLA_FAILPOINTS`` set, so they ``os._exit`` at the named point
(``node/failpoints.py``) while clients run the register workload; a supervisor restarts each
crashed member without the failpoint. Afterwards the history must be linearizable (no
acknowledged write lost, no stale read) and all members must agree on HashKV at one revision
(an entry applied twice on one member would change its revisions and its hash).
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from flotilla.node.api.etcdpb import rpc_pb2 as pb
from flotilla.node.api.etcdpb import rpc_pb2_grpc as rpc
from flotilla.node.failpoints import CRASH_EXIT_CODE

from ..node.procs import ProcessCluster, wait_for
from .checker import check
from .models import REGISTER
from .workload import Workload

pytestmark = pytest.mark.node


class Supervisor:
    """Restarts members that a failpoint crashed (without it); notes any other exit."""

    running: list[Supervisor] = []

    def __init__(self, cluster: ProcessCluster) -> None:
        Supervisor.running.append(self)
        self.c = cluster
        self.crashed: list[str] = []
        self.unexpected: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            for m in self.c.members:
                if m.popen is None or m.popen.poll() is None:
                    continue
                code = m.popen.returncode
                if code == CRASH_EXIT_CODE:
                    self.crashed.append(m.name)
                else:
                    self.unexpected.append(f"{m.name} exited with {code}")
                m.env = {}
                self.c.start(m)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        if self in Supervisor.running:
            Supervisor.running.remove(self)


@pytest.fixture
def make(tmp_path: Path) -> Iterator[list[ProcessCluster]]:
    started: list[ProcessCluster] = []
    yield started
    for sup in Supervisor.running:
        sup.stop()  # first, or it would restart the members being stopped
    for c in started:
        c.stop()


def start(started: list[ProcessCluster], root: Path, env: dict[str, str]) -> ProcessCluster:
    c = ProcessCluster(root, 3, extra_flags=["--snapshot-count=40"])
    started.append(c)
    for m in c.members:
        m.env = dict(env)
    c.start()
    return c


def put_somewhere(c: ProcessCluster, key: bytes, value: bytes) -> None:
    """Put through whichever running member takes it (retrying, as a client would)."""

    def attempt() -> bool:
        for m in c.members:
            if m.alive:
                with grpc.insecure_channel(m.endpoint) as ch:
                    try:
                        rpc.KVStub(ch).Put(pb.PutRequest(key=key, value=value), timeout=2)
                        return True
                    except grpc.RpcError:
                        continue
        return False

    wait_for(f"a member to take the put of {key!r}", attempt, 30)


def hashes_agree(c: ProcessCluster) -> dict[str, int]:
    """Wait until every member applied the same revision; their HashKV there."""

    def revisions() -> set[int]:
        revs = set()
        for m in c.members:
            with grpc.insecure_channel(m.endpoint) as ch:
                req = pb.RangeRequest(key=b"lin/", serializable=True)
                revs.add(rpc.KVStub(ch).Range(req, timeout=2).header.revision)
        return revs

    wait_for("every member to apply the same revision", lambda: len(revisions()) == 1, 30)
    rev = revisions().pop()
    out = {}
    for m in c.members:
        with grpc.insecure_channel(m.endpoint) as ch:
            resp = rpc.MaintenanceStub(ch).HashKV(pb.HashKVRequest(revision=rev), timeout=5)
            out[m.name] = resp.hash
    return out


def run_workload(c: ProcessCluster, seconds: float, compact: bool = False) -> Workload:
    w = Workload([m.endpoint for m in c.members], seed=random.randrange(1 << 30), workers=4)
    w.start()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.5)
        if compact:
            # Compact to the current revision through any member; errors are fine here.
            for m in c.members:
                try:
                    with grpc.insecure_channel(m.endpoint) as ch:
                        kv = rpc.KVStub(ch)
                        rev = kv.Range(pb.RangeRequest(key=b"x"), timeout=1).header.revision
                        kv.Compact(pb.CompactionRequest(revision=rev), timeout=2)
                    break
                except grpc.RpcError:
                    continue
    w.stop()
    return w


def judge(c: ProcessCluster, w: Workload, sup: Supervisor) -> None:
    sup.stop()
    assert not sup.unexpected, sup.unexpected
    for m in c.members:
        if not m.alive:
            c.start(m)
    c.wait_healthy(timeout=40)
    result = check(REGISTER, w.history, budget=60)
    assert result.verdict.value == "ok", result.explain(REGISTER.describe)
    hashes = hashes_agree(c)
    assert len(set(hashes.values())) == 1, f"members disagree after crashes: {hashes}"
    assert w.counts.ok > 50, w.counts


@pytest.mark.parametrize(
    "point",
    [
        "raft.before_log_write",
        "raft.after_log_write",
        "raft.before_apply",
        "raft.after_apply",
        "snapshot.before_save",
        "snapshot.after_save",
        "raftlog.before_compact",
        "raftlog.after_compact",
        "mvcc.compact",
    ],
)
def test_members_crashed_at_a_point_recover_everything(
    make: list[ProcessCluster], tmp_path: Path, point: str
) -> None:
    # Each member crashes at a different hit, so the crashes come at different moments and
    # (for the apply points) on the leader as well as on followers; the log-write points are
    # hit by elections too, while the cluster forms.
    c = ProcessCluster(tmp_path, 3, extra_flags=["--snapshot-count=40"])
    make.append(c)
    for i, m in enumerate(c.members):
        after = 1 + i if point.startswith(("snapshot", "raftlog", "mvcc")) else 5 + 20 * i
        m.env = {"FLOTILLA_FAILPOINTS": f"{point}=crash:after={after}"}
    c.start()
    sup = Supervisor(c)
    c.wait_healthy(timeout=40)
    w = run_workload(c, 7, compact=point == "mvcc.compact")
    assert sup.crashed, f"no member reached the crash point {point}"
    judge(c, w, sup)


@pytest.mark.parametrize(
    "point",
    [
        "snapshot.before_install",
        "snapshot.after_install",
    ],
)
def test_a_member_crashed_while_installing_a_snapshot_recovers(
    make: list[ProcessCluster], tmp_path: Path, point: str
) -> None:
    c = start(make, tmp_path, {})
    c.wait_healthy()
    behind = c.members[2]
    c.kill(behind)
    c.wait_leader(c.members[:2])
    # A live lease with a key, so the snapshot carries lease records too.
    with grpc.insecure_channel(c.wait_leader(c.members[:2]).endpoint) as ch:
        lease = rpc.LeaseStub(ch).LeaseGrant(pb.LeaseGrantRequest(TTL=600), timeout=5).ID
        rpc.KVStub(ch).Put(pb.PutRequest(key=b"leased", value=b"x", lease=lease), timeout=5)
    for i in range(150):  # far past --snapshot-count: the log behind it is compacted away
        put_somewhere(c, b"fill%d" % (i % 5), b"f%d" % i)
    behind.env = {"FLOTILLA_FAILPOINTS": f"{point}=crash"}
    c.start(behind)
    sup = Supervisor(c)
    w = run_workload(c, 8)
    wait_for(f"{behind.name} to crash at {point}", lambda: behind.name in sup.crashed, 20)
    judge(c, w, sup)
