"""The whole state machine's snapshot: what a follower or learner installs from the leader."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import plyvel

from flotilla.node.api.etcdpb import rpc_pb2 as pb
from flotilla.node.config import parse
from flotilla.node.kv import requests
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
