"""A member's own snapshot must not cross a snapshot it installs from the leader.

A member records its own snapshot (and compacts its log) in a worker thread while its loop
goes on. If the leader's snapshot arrives meanwhile, the two must not cross: the older
record written after the install would point the log back at a state the member no longer
holds, and a member catching up from this one would take the wrong state under the index.
"""

from __future__ import annotations

import re
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
RECORD_STALL_MS = 8_000  # the follower's own record: long enough for the leader's to arrive


@pytest.fixture
def cluster(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[NetnsCluster]:
    c = NetnsCluster(tmp_path, 3, extra_flags=[f"--snapshot-count={SNAPSHOT_COUNT}"])
    c.members[2].env = {"FLOTILLA_FAILPOINTS": f"snapshot.before_save=sleep:ms={RECORD_STALL_MS}"}
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

    # The slow member starts its own snapshot at SNAPSHOT_COUNT and stalls in its record.
    put_many(leader.endpoint, 0, SNAPSHOT_COUNT + 10)
    # Cut it off; the others move on and compact past it, so it will need their snapshot.
    cluster.isolate(slow.name)
    put_many(leader.endpoint, SNAPSHOT_COUNT + 10, 4 * SNAPSHOT_COUNT)
    cluster.heal()

    def log_text() -> str:
        return slow.log_path.read_text()

    wait_for(
        "the slow member to install the leader's snapshot",
        lambda: "installed snapshot at index" in log_text(),
        timeout=RECORD_STALL_MS / 1000 + 20,
    )
    assert slow.alive, log_text()[-2000:]
    # The race really happened: its own snapshot was still being recorded when the
    # leader's arrived, and the install waited for it.
    text = log_text()
    own = re.search(r"snapshot at index \d+, log compacted", text)
    assert own is not None, text[-3000:]
    assert own.start() < text.find("installed snapshot at index"), text[-3000:]

    # It keeps the installed state, and every write after it.
    expected = keys_on(leader)
    assert len(expected) == 5 * SNAPSHOT_COUNT + 10
    wait_for("the slow member to hold every write", lambda: keys_on(slow) == expected, 20)
    # And it starts again from what it holds, with every write.
    cluster.kill(slow)
    slow.env = {}
    cluster.start(slow)
    cluster.wait_healthy()
    wait_for("the restarted member to hold every write", lambda: keys_on(slow) == expected, 20)
