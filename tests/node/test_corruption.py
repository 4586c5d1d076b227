"""Damaged data, end to end: on disk in a real member's LevelDB, and on a real peer port.

Every Raft log record and every MVCC record carries a CRC-32 (``node/storage/codec.py``,
``node/kv/codec.py``), snapshots a SHA-256 per transfer (``node/transport/snapshot.py``).
Here the damage is done to a stopped member's real files, or sent to a running member's real
peer port, and the member must refuse it with a clear message, apply nothing, and leave the
rest of the cluster untouched. (The unit tests in tests/storage, tests/kv and
tests/transport cover each checksum on its own.)
"""

from __future__ import annotations

import json
import signal
import subprocess
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import plyvel
import pytest

from flotilla.node.api.etcdpb import rpc_pb2 as pb
from flotilla.node.config import parse
from flotilla.node.kv import codec as kvcodec
from flotilla.node.kv import requests
from flotilla.node.kv.state import KvStateMachine
from flotilla.node.members import cluster_id_of
from flotilla.node.raft.types import ConfState, Message, MessageType, Snapshot, SnapshotMeta
from flotilla.node.storage.codec import ENTRY_PREFIX, ENTRY_PREFIX_END
from flotilla.node.transport import snapshot
from flotilla.node.transport.codec import seal, to_pb
from flotilla.node.transport.pb import raftpeer_pb2 as peer_pb

from .procs import Proc, ProcessCluster, etcdctl, wait_for


@pytest.fixture
def cluster(make_cluster: Callable[..., ProcessCluster]) -> ProcessCluster:
    c = make_cluster(3)
    for i in range(20):
        etcdctl(c.endpoints, "put", f"k{i}", f"precious-{i}")
    return c


def _flip(value: bytes, at: int) -> bytes:
    return value[:at] + bytes([value[at] ^ 0x10]) + value[at + 1 :]


def _start_refused(c: ProcessCluster, m: Proc) -> str:
    r = subprocess.run(c.command(m), capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, f"the member started on damaged data: {r.stderr[-2000:]}"
    return r.stderr


def test_damaged_records_on_disk_stop_the_member_before_it_serves(cluster: ProcessCluster) -> None:
    victim = cluster.members[2]
    cluster.kill(victim, signal.SIGTERM)
    db_path = str(victim.data_dir / "db")

    def damage(pick: Callable[[plyvel.DB], Iterator[tuple[bytes, bytes]]], how: str) -> str:
        db = plyvel.DB(db_path)
        key, original = next(pick(db))
        bad = _flip(original, len(original) // 2) if how == "flip" else original[:-3]
        db.put(key, bad, sync=True)
        db.close()
        stderr = _start_refused(cluster, victim)
        db = plyvel.DB(db_path)
        assert db.get(key) == bad, "the refused start changed the record"
        db.put(key, original, sync=True)  # mended for the next case
        db.close()
        return stderr

    def last_entry(db: plyvel.DB) -> Iterator[tuple[bytes, bytes]]:
        return iter(db.iterator(start=ENTRY_PREFIX, stop=ENTRY_PREFIX_END, reverse=True))

    def kv_record(db: plyvel.DB) -> Iterator[tuple[bytes, bytes]]:
        return ((k, v) for k, v in db.iterator() if b"precious-7" in v and not k.startswith(b"r/"))

    for pick, how in [(last_entry, "flip"), (last_entry, "truncate"), (kv_record, "flip")]:
        stderr = damage(pick, how)
        assert "flotilla-node:" in stderr and "Traceback" not in stderr, stderr
        assert any(w in stderr.lower() for w in ("checksum", "corrupt", "decod")), stderr

    # The other two went on serving; the mended member comes back and catches up.
    etcdctl(cluster.endpoints, "put", "after", "damage")
    cluster.start(victim)
    wait_for(
        "the mended member to catch up",
        lambda: (
            etcdctl(victim.endpoint, "get", "after", "--consistency=s").stdout.split()
            == ["after", "damage"]
        ),
    )
    got = etcdctl(victim.endpoint, "get", "k7", "--consistency=s").stdout.split()
    assert got == ["k7", "precious-7"]


def _peer_call(target: str, method: str, payload: list[bytes]) -> grpc.RpcError:
    with grpc.insecure_channel(target) as channel:
        call = channel.stream_unary(f"/flotilla.raftpeer.RaftPeer/{method}")
        with pytest.raises(grpc.RpcError) as refused:
            call(iter(payload), timeout=10)
    return refused.value


def test_damaged_peer_messages_and_snapshots_are_refused(
    cluster: ProcessCluster, tmp_path: Path
) -> None:
    leader = cluster.wait_leader()
    follower = next(m for m in cluster.members if m is not leader)
    term = follower.metric("flotilla_server_term")
    target = follower.peer_url.removeprefix("http://")
    cid = cluster_id_of(cluster.token)
    me = 0x4242

    # Bytes that are no MessageBatch, and a batch whose message has no valid type.
    err = _peer_call(target, "Send", [b"\xff\xff\xff\x0f garbage"])
    assert err.code() in (grpc.StatusCode.INTERNAL, grpc.StatusCode.INVALID_ARGUMENT), err
    inner = peer_pb.RaftMessages(messages=[peer_pb.RaftMessage(type=250, term=int(term) + 9)])
    payload = inner.SerializeToString()
    bad_type = peer_pb.MessageBatch(
        cluster_id=cid, from_id=me, payload=payload, crc=zlib.crc32(payload)
    )
    err = _peer_call(target, "Send", [bad_type.SerializeToString()])
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err

    # A vote request from the current term, one bit of its term flipped on the way: it still
    # parses, and read as sent it would depose the leader (a far-future term).
    vote = Message(MessageType.VOTE, follower_id(follower), me, int(term), log_term=1 << 40)
    sealed = seal(cid, me, [vote])
    term_at = sealed.payload.index(b"\x20" + _varint(int(term))) + 1  # field 4, a varint
    flipped = bytearray(sealed.payload)
    flipped[term_at] ^= 0x40
    damaged = peer_pb.MessageBatch(
        cluster_id=cid, from_id=me, payload=bytes(flipped), crc=sealed.crc
    )
    assert peer_pb.RaftMessages.FromString(damaged.payload).messages[0].term != int(term)
    err = _peer_call(target, "Send", [damaged.SerializeToString()])
    assert err.code() == grpc.StatusCode.DATA_LOSS and "checksum" in (err.details() or ""), err

    # A snapshot far ahead of the cluster, one bit flipped on the way: it would replace the
    # follower's whole state if installed.
    meta = SnapshotMeta(index=10**6, term=int(term), conf=ConfState(voters=frozenset({me})))
    header = to_pb(
        Message(MessageType.SNAP, follower_id(follower), me, int(term), snapshot=Snapshot(meta))
    )
    data = _state_snapshot(tmp_path / "sender")
    chunks = [c.SerializeToString() for c in snapshot.chunks(cid, me, header, data, 1000)]
    chunks[1] = chunks[1].replace(b"s" * 10, b"s" * 9 + b"t", 1)
    err = _peer_call(target, "SendSnapshot", chunks)
    assert err.code() == grpc.StatusCode.DATA_LOSS and "checksum" in (err.details() or ""), err
    # Cut short: the last chunk never comes.
    err = _peer_call(target, "SendSnapshot", chunks[:-1])
    assert err.code() == grpc.StatusCode.DATA_LOSS, err

    # Nothing of it was applied: same term, same leader, and the cluster writes on.
    etcdctl(cluster.endpoints, "put", "still", "fine")
    assert cluster.wait_leader() is leader
    assert follower.metric("flotilla_server_term") == term
    assert follower.metric("etcd_server_proposals_applied_total") < 10**6
    got = etcdctl(follower.endpoint, "get", "k3", "--consistency=s").stdout.split()
    assert got == ["k3", "precious-3"]


def _state_snapshot(path: Path) -> bytes:
    """A well-formed state snapshot, as a leader sends one: twenty keys, values of "s"."""
    db = plyvel.DB(str(path), create_if_missing=True)
    try:
        sm = KvStateMachine(db, parse([f"--data-dir={path}"], environ={}))
        entries = [
            (
                i,
                requests.encode(
                    i.to_bytes(16, "big"), pb.PutRequest(key=b"k%d" % i, value=b"s" * 256)
                ),
            )
            for i in range(1, 21)
        ]
        batch = db.write_batch()
        sm.apply(entries, batch)
        batch.write()
        sm.batch_written()
        return sm.dump(sm.view())
    finally:
        db.close()


def _varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def follower_id(m: Proc) -> int:
    doc = etcdctl(m.endpoint, "endpoint", "status", "-w", "json").stdout
    return int(json.loads(doc)[0]["Status"]["header"]["member_id"])


# -- members whose data diverged: corruption checks -------------------------------------------
#
# The damage above is caught by checksums. A record rewritten with a valid checksum (a bug, or
# a disk that returned another block whole) is caught only by comparing members: etcd's
# corruption checks, which compare HashKV across members.


def _rewrite_value(m: Proc, old: bytes, new: bytes) -> None:
    """Give the record holding ``old`` the value ``new``, checksum and all, in a stopped
    member's database: the member reads it as its own."""
    db = plyvel.DB(str(m.data_dir / "db"))
    try:
        full, value = next((k, v) for k, v in db.iterator() if old in v and not k.startswith(b"r/"))
        rk = full[-17:]
        tombstone, kv = kvcodec.decode_kv(rk, value)
        kv.value = new
        db.put(full, kvcodec.encode_kv(rk, tombstone, kv.SerializeToString()), sync=True)
    finally:
        db.close()


def _alarms(c: ProcessCluster) -> str:
    return etcdctl(c.endpoints, "alarm", "list").stdout


def test_the_periodic_check_raises_corrupt_and_stops_writes_until_disarmed(
    make_cluster: Callable[..., ProcessCluster],
) -> None:
    c = make_cluster(3, extra_flags=["--corrupt-check-time=1s"])
    for i in range(20):
        etcdctl(c.endpoints, "put", f"k{i}", f"precious-{i}")
    leader = c.wait_leader()
    victim = next(m for m in c.members if m is not leader)
    victim_id = follower_id(victim)
    c.kill(victim, signal.SIGTERM)
    _rewrite_value(victim, b"precious-7", b"tampered-7")
    c.start(victim)

    expected = f"memberID:{victim_id} alarm:CORRUPT"
    wait_for("the leader to raise CORRUPT for the diverged member", lambda: expected in _alarms(c))
    assert _alarms(c).strip() == expected, "only the diverged member is blamed"
    status = json.loads(etcdctl(leader.endpoint, "endpoint", "status", "-w", "json").stdout)
    assert status[0]["Status"]["errors"] == [expected]

    # Every change is refused with etcd's status; reads go on.
    for args in (("put", "k1", "lost"), ("del", "k2"), ("lease", "grant", "60")):
        r = etcdctl(leader.endpoint, *args, check=False)
        assert r.returncode != 0 and "etcdserver: corrupt cluster" in r.stderr, (args, r)
    got = etcdctl(leader.endpoint, "get", "k1").stdout.split()
    assert got == ["k1", "precious-1"]

    # The operator mends the member and disarms: writes resume, and later checks agree.
    c.kill(victim, signal.SIGTERM)
    _rewrite_value(victim, b"tampered-7", b"precious-7")
    c.start(victim)

    def agreeing_checks() -> int:  # on whichever member leads
        return sum(m.log_path.read_text().count("2 of 2 peers agree") for m in c.members)

    checks_before = agreeing_checks()
    etcdctl(c.endpoints, "alarm", "disarm")
    etcdctl(c.endpoints, "put", "k1", "after")
    wait_for(
        "a check that hears from both peers after the disarm",
        lambda: agreeing_checks() > checks_before,
    )
    assert _alarms(c).strip() == ""


def test_the_initial_check_refuses_to_start_a_member_whose_data_diverged(
    cluster: ProcessCluster,
) -> None:
    victim = cluster.members[2]
    cluster.kill(victim, signal.SIGTERM)
    etcdctl(cluster.endpoints, "put", "while", "away")  # the others move on meanwhile
    _rewrite_value(victim, b"precious-7", b"tampered-7")
    victim.flags = ["--feature-gates=InitialCorruptCheck=true"]
    stderr = _start_refused(cluster, victim)
    assert "found data inconsistency with peers" in stderr and "Traceback" not in stderr, stderr

    _rewrite_value(victim, b"tampered-7", b"precious-7")
    cluster.start(victim)
    wait_for(
        "the mended member to pass the check and catch up",
        lambda: (
            etcdctl(victim.endpoint, "get", "while", "--consistency=s").stdout.split()
            == ["while", "away"]
        ),
    )
    assert "initial corruption check passed: 2 of 2 peers agree" in victim.log_path.read_text()
