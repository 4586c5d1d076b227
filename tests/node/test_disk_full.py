"""A full disk: a member's data directory on a tmpfs of a few MiB, filled by real writes.

A member whose LevelDB write fails stops (exit code 1, one line saying why), as etcd stops
when its WAL cannot be written: nothing it had not written was acknowledged, and LevelDB
refuses every write after a failed one until reopened. Once the filesystem has room again
(``mount -o remount,size=...``) the member starts, keeps every acknowledged write, and
catches up with its peers. Needs root for the mounts.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from flotilla.node.api.etcdpb import rpc_pb2 as pb
from flotilla.node.api.etcdpb import rpc_pb2_grpc as pb_grpc

from .procs import Proc, ProcessCluster, wait_for

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")

VALUE = b"x" * (64 << 10)


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def grow(mnt: Path) -> None:
    subprocess.run(["mount", "-o", "remount,size=64m", str(mnt)], check=True)


def put(endpoint: str, key: bytes, value: bytes = VALUE) -> bool:
    """True if the write was acknowledged."""
    with grpc.insecure_channel(endpoint) as ch:
        try:
            pb_grpc.KVStub(ch).Put(pb.PutRequest(key=key, value=value), timeout=5)
        except grpc.RpcError:
            return False
    return True


def get(endpoint: str, key: bytes) -> bytes | None:
    with grpc.insecure_channel(endpoint) as ch:
        r = pb_grpc.KVStub(ch).Range(pb.RangeRequest(key=key, serializable=True), timeout=5)
    return bytes(r.kvs[0].value) if r.kvs else None


def on_small_fs(m: Proc, mnt: Path) -> None:
    m.data_dir = mnt / m.name  # the log file stays outside, so the member can say why it stops


def fill_until_stopped(m: Proc, endpoint: Callable[[], str]) -> list[bytes]:
    """Write until ``m`` stops; the keys that were acknowledged."""
    acked: list[bytes] = []
    for i in range(400):  # 25 MiB at most: far past the 3 MiB filesystem
        if not m.alive:
            break
        key = b"fill/%04d" % i
        if put(endpoint(), key):
            acked.append(key)
    assert m.popen is not None
    assert m.popen.wait(timeout=30) == 1, "the member should stop with exit code 1"
    text = m.log_path.read_text(errors="replace")
    last = text.strip().splitlines()[-1]  # one line saying why, not a traceback
    assert last.startswith("flotilla-node: cannot write to the data directory"), text[-3000:]
    assert "No space left on device" in last, last
    return acked


def test_a_lone_member_stops_on_a_full_disk_and_keeps_every_acknowledged_write(
    tmp_path: Path, small_fs: Path
) -> None:
    c = ProcessCluster(tmp_path / "c", 1)
    m = c.members[0]
    on_small_fs(m, small_fs)
    c.start()
    try:
        c.wait_healthy()
        acked = fill_until_stopped(m, lambda: m.endpoint)
        assert acked, "nothing was written before the disk filled"
        grow(small_fs)
        c.start(m)
        c.wait_healthy()
        for key in acked:
            assert get(m.endpoint, key) == VALUE, f"acknowledged {key!r} was lost"
        assert put(m.endpoint, b"after", b"space returned"), "writes did not resume"
    finally:
        c.stop()


def test_a_member_with_a_full_disk_stops_alone_and_catches_up_later(
    tmp_path: Path, small_fs: Path
) -> None:
    c = ProcessCluster(tmp_path / "c3", 3)
    full = c.members[2]
    on_small_fs(full, small_fs)
    c.start()
    try:
        c.wait_healthy()
        others = [m for m in c.members if m is not full]
        acked = fill_until_stopped(full, lambda: others[0].endpoint)
        more = [b"more/%d" % i for i in range(5)]
        for key in more:  # the first may wait for an election, if the full member led
            wait_for(f"the two others to accept {key!r}", lambda k=key: put(others[0].endpoint, k))
        grow(small_fs)
        c.start(full)
        wait_for(
            "the member to catch up once it has room",
            lambda: get(full.endpoint, more[-1]) == VALUE,
            timeout=60,
        )
        lost = [k for k in acked + more if get(full.endpoint, k) != VALUE]
        assert not lost, f"{len(lost)} acknowledged writes missing on the restarted member"
        with grpc.insecure_channel(others[0].endpoint) as ch:
            rev = pb_grpc.KVStub(ch).Range(pb.RangeRequest(key=b"x"), timeout=5).header.revision
        hashes = set()
        for m in c.members:
            with grpc.insecure_channel(m.endpoint) as ch:
                h = pb_grpc.MaintenanceStub(ch).HashKV(pb.HashKVRequest(revision=rev), timeout=10)
                hashes.add(h.hash)
        assert len(hashes) == 1, "the members diverged"
    finally:
        c.stop()
