"""A member's own snapshot must not cross a snapshot it installs from the leader.

A member serializes its state for a snapshot in a worker thread while its loop goes on. If
the leader's snapshot is installed meanwhile, the dump is of an older state. Saved under the
installed snapshot's name (what the member did before), it replaced the installed file: the
older state under a newer index, which any member catching up from this one would take,
missing writes for good. Or the two saves collided on the same temporary file and the
member stopped.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from flotilla.node.api.etcdpb import rpc_pb2 as pb
from flotilla.node.api.etcdpb import rpc_pb2_grpc as rpc

from .netns import NetnsCluster, netns_available, running
from .procs import Proc, wait_for
from .test_cli_ops import flotilla

pytestmark = [
    pytest.mark.node,
    pytest.mark.skipif(not netns_available(), reason="needs root for network namespaces"),
]

SNAPSHOT_COUNT = 100
DUMP_STALL_MS = 10_000  # the follower's dump: long enough to install the leader's meanwhile


@pytest.fixture
def cluster(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[NetnsCluster]:
    c = NetnsCluster(tmp_path, 3, extra_flags=[f"--snapshot-count={SNAPSHOT_COUNT}"])
    c.members[2].env = {"FLOTILLA_FAILPOINTS": f"snapshot.after_dump=sleep:ms={DUMP_STALL_MS}"}
    yield from running(c, request)


def put_many(endpoint: str, first: int, n: int) -> None:
    with grpc.insecure_channel(endpoint) as ch:
        kv = rpc.KVStub(ch)
        for i in range(first, first + n):
            kv.Put(pb.PutRequest(key=b"k%05d" % i, value=b"v%d" % i), timeout=5)


def keys_on(m: Proc) -> dict[bytes, bytes]:
    with grpc.insecure_channel(m.endpoint) as ch:
        req = pb.RangeRequest(key=b"k", range_end=b"l", serializable=True)
        resp = rpc.KVStub(ch).Range(req, timeout=5)
    return {kv.key: kv.value for kv in resp.kvs}


def test_an_install_during_a_members_own_snapshot_keeps_the_installed_state(
    cluster: NetnsCluster,
) -> None:
    slow = cluster.members[2]
    leader = cluster.wait_leader()
    if leader is slow:
        flotilla("move-leader", "m1", f"--endpoints={cluster.endpoints}")
        leader = cluster.wait_leader([m for m in cluster.members if m is not slow])

    # The slow member starts its own snapshot at SNAPSHOT_COUNT and stalls in the dump.
    put_many(leader.endpoint, 0, SNAPSHOT_COUNT + 10)
    # Cut it off; the others move on and compact past it, so it will need their snapshot.
    cluster.isolate(slow.name)
    put_many(leader.endpoint, SNAPSHOT_COUNT + 10, 4 * SNAPSHOT_COUNT)
    cluster.heal()

    def installed() -> bool:
        return "installed snapshot at index" in slow.log_path.read_text()

    wait_for("the slow member to install the leader's snapshot", installed, timeout=20)
    # The race really happened: its own dump came back after the install, and was dropped.
    wait_for(
        "the slow member's stalled dump to be abandoned",
        lambda: "abandoned: snapshot" in slow.log_path.read_text(),
        timeout=DUMP_STALL_MS / 1000 + 10,
    )
    assert slow.alive, slow.log_path.read_text()[-2000:]

    # The snapshot it keeps (and would send to a member that needs one) is the leader's,
    # byte for byte, not the older dump saved under the installed snapshot's name.
    cluster.kill(slow)
    kept = sorted((slow.data_dir / "snap").glob("*.snap"))[-1]
    sent = leader.data_dir / "snap" / kept.name
    assert sent.exists(), f"the leader has no snapshot {kept.name}"
    assert kept.read_bytes() == sent.read_bytes(), f"{kept} is not the snapshot installed"
    # And it starts again from what it holds, with every write.
    slow.env = {}
    cluster.start(slow)
    cluster.wait_healthy()
    expected = keys_on(leader)
    assert len(expected) == 5 * SNAPSHOT_COUNT + 10
    wait_for("the restarted member to hold every write", lambda: keys_on(slow) == expected, 20)
