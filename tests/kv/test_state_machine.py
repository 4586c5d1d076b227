"""The state machine's facade: events of split applies, snapshots with leases."""

from __future__ import annotations

import os
from pathlib import Path

import plyvel

from flotilla.node.api.etcdpb import rpc_pb2 as pb
from flotilla.node.config import parse
from flotilla.node.kv import requests
from flotilla.node.kv.state import KvStateMachine


def put_entry(index: int, key: bytes, lease: int = 0) -> bytes:
    return requests.encode(os.urandom(16), pb.PutRequest(key=key, value=b"v", lease=lease))


def machine(path: Path) -> tuple[plyvel.DB, KvStateMachine]:
    cfg = parse(
        ["--name=m1", f"--data-dir={path}", "--initial-cluster=m1=http://localhost:2380"],
        environ={},
    )
    db = plyvel.DB(str(path / "db"), create_if_missing=True)
    return db, KvStateMachine(db, cfg)


def test_events_of_an_apply_split_around_a_conf_change_all_reach_watchers(
    tmp_path: Path,
) -> None:
    # The driver applies a batch of committed entries in one write batch, but calls the
    # state machine once per run of KV entries between configuration changes. Events of
    # the first run used to be dropped: a watcher saw a gap at that revision.
    db, sm = machine(tmp_path)
    stream = sm.watch_hub.open_stream()
    stream.create(pb.WatchCreateRequest(key=b"k", range_end=b"l"))
    stream.take()  # the "created" response

    def entry(index: int, key: bytes) -> tuple[int, bytes]:
        return index, put_entry(index, key)

    batch = db.write_batch()
    sm.apply([entry(1, b"k1")], batch)
    # (a configuration change entry is applied here by the driver)
    sm.apply([entry(3, b"k2")], batch)
    batch.write()
    sm.batch_written()
    seen = [ev.kv.key for r in stream.take() for ev in r.events]
    assert seen == [b"k1", b"k2"]
    db.close()


def test_a_snapshot_with_leases_installs_on_another_member(tmp_path: Path) -> None:
    # Lease records travel under their full keys; installing them used to prefix them a
    # second time and refuse the snapshot as corrupt, crashing the member catching up.
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    db_a, a = machine(tmp_path / "a")
    batch = db_a.write_batch()
    grant = requests.encode(os.urandom(16), pb.LeaseGrantRequest(ID=0x1234, TTL=30))
    a.apply([(1, grant), (2, put_entry(2, b"held", lease=0x1234))], batch)
    batch.write()
    a.batch_written()
    data = a.dump(a.view())

    db_b, b = machine(tmp_path / "b")
    b.restore(data, [])
    assert b.lessor.exists(0x1234)
    assert b.store.keys_for_lease(0x1234) == [b"held"]
    db_a.close()
    db_b.close()
