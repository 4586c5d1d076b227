"""The whole state machine's snapshot: what a follower or learner installs from the leader."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import plyvel
import pytest

from flotilla.node.api.etcdpb import rpc_pb2 as pb
from flotilla.node.config import parse
from flotilla.node.kv import requests
from flotilla.node.kv.errors import CorruptDataError
from flotilla.node.kv.state import KvStateMachine


def machine(path: Path) -> KvStateMachine:
    db: Any = plyvel.DB(str(path), create_if_missing=True)
    return KvStateMachine(db, parse([f"--data-dir={path}"], environ={}))


def apply(sm: KvStateMachine, index: int, *reqs: Any) -> None:
    entries = [
        (index + i, requests.encode((index + i).to_bytes(16, "big"), req))
        for i, req in enumerate(reqs)
    ]
    batch = sm.db.write_batch()
    sm.apply(entries, batch)
    batch.write()
    sm.batch_written()


def test_installed_snapshot_carries_leases_and_their_keys(tmp_path: Path) -> None:
    leader = machine(tmp_path / "leader")
    learner = machine(tmp_path / "learner")
    try:
        apply(
            leader,
            1,
            pb.LeaseGrantRequest(ID=7, TTL=60),
            pb.PutRequest(key=b"svc/a", value=b"1", lease=7),
            pb.PutRequest(key=b"plain", value=b"2"),
        )
        data = leader.dump(leader.view())

        learner.restore(data, [])

        lease = learner.lessor.get(7)
        assert lease is not None and lease.ttl == 60
        assert learner.store.keys_for_lease(7) == [b"svc/a"]
        got = learner.store.range(pb.RangeRequest(key=b"\x00", range_end=b"\x00"))
        assert [(kv.key, kv.value) for kv in got.kvs] == [(b"plain", b"2"), (b"svc/a", b"1")]
    finally:
        leader.db.close()
        learner.db.close()


def _pieces(data: bytes, rng: random.Random, n: int) -> list[bytes]:
    cuts = sorted(rng.sample(range(1, len(data)), n))
    return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]


def _contents(sm: KvStateMachine) -> list[tuple[bytes, bytes, int, int]]:
    got = sm.store.range(pb.RangeRequest(key=b"\x00", range_end=b"\x00"))
    return [(kv.key, kv.value, kv.mod_revision, kv.version) for kv in got.kvs]


def _history(sm: KvStateMachine) -> list[tuple[int, bytes]]:
    """Every revision's event, oldest first, as a watch from revision 1 would see them."""
    out = []
    for rev in range(1, sm.store.revision + 1):
        got = sm.store.range(pb.RangeRequest(key=b"\x00", range_end=b"\x00", revision=rev))
        out.append((rev, b",".join(kv.key + b"=" + kv.value for kv in got.kvs)))
    return out


def _busy_leader(path: Path) -> KvStateMachine:
    leader = machine(path)
    reqs: list[Any] = [pb.LeaseGrantRequest(ID=7, TTL=60)]
    for i in range(60):
        reqs.append(pb.PutRequest(key=b"k%d" % (i % 13), value=b"v%d" % i * 9, lease=7 * (i % 2)))
        if i % 11 == 0:
            reqs.append(pb.DeleteRangeRequest(key=b"k%d" % (i % 13)))
    apply(leader, 1, *reqs)
    return leader


def test_a_snapshot_read_in_pieces_of_any_size_installs_the_same_state(tmp_path: Path) -> None:
    leader = _busy_leader(tmp_path / "leader")
    data = leader.dump(leader.view())
    rng = random.Random(5)
    try:
        for n, splits in enumerate(
            [[data], [bytes([b]) for b in data], *(_pieces(data, rng, k) for k in (1, 2, 10, 100))]
        ):
            learner = machine(tmp_path / f"learner{n}")
            loader = learner.loader()
            for piece in splits:
                loader.feed(piece)
            loader.finish()
            learner.restore(b"", [], loader)
            assert _contents(learner) == _contents(leader), n
            assert _history(learner) == _history(leader), n
            assert learner.store.keys_for_lease(7) == leader.store.keys_for_lease(7), n
            learner.db.close()
    finally:
        leader.db.close()


def test_damage_is_found_however_the_snapshot_arrives(tmp_path: Path) -> None:
    leader = _busy_leader(tmp_path / "leader")
    data = leader.dump(leader.view())
    leader.db.close()
    rng = random.Random(9)
    damaged = [data[:-1], data + b"\x00", data[:100]]
    for at in rng.sample(range(len(data)), 30):
        flipped = bytearray(data)
        flipped[at] ^= 1 << rng.randrange(8)
        damaged.append(bytes(flipped))
    learner = machine(tmp_path / "learner")
    apply(learner, 1, pb.PutRequest(key=b"mine", value=b"kept"))
    before = _history(learner)
    for i, bad in enumerate(damaged):
        loader = learner.loader()
        with pytest.raises(CorruptDataError):
            for piece in _pieces(bad, rng, 5):
                loader.feed(piece)
            loader.finish()
        assert _history(learner) == before, i
    learner.db.close()
