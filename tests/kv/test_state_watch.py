"""Watchers get the events of every apply call covered by one write batch."""

from __future__ import annotations

import os
from pathlib import Path

import plyvel

from flotilla.node.api.etcdpb import rpc_pb2 as pb
from flotilla.node.config import parse
from flotilla.node.kv import requests
from flotilla.node.kv.state import KvStateMachine


def test_events_of_an_apply_split_around_a_conf_change_all_reach_watchers(
    tmp_path: Path,
) -> None:
    # The driver applies a batch of committed entries in one write batch, but calls the
    # state machine once per run of KV entries between configuration changes. Events of
    # the first run used to be dropped: a watcher saw a gap at that revision.
    cfg = parse(
        [
            "--name=m1",
            f"--data-dir={tmp_path}",
            "--initial-cluster=m1=http://localhost:2380",
        ],
        environ={},
    )
    db = plyvel.DB(str(tmp_path / "db"), create_if_missing=True)
    sm = KvStateMachine(db, cfg)
    stream = sm.watch_hub.open_stream()
    stream.create(pb.WatchCreateRequest(key=b"k", range_end=b"l"))
    stream.take()  # the "created" response

    def entry(index: int, key: bytes) -> tuple[int, bytes]:
        return index, requests.encode(os.urandom(16), pb.PutRequest(key=key, value=b"v"))

    batch = db.write_batch()
    sm.apply([entry(1, b"k1")], batch)
    # (a configuration change entry is applied here by the driver)
    sm.apply([entry(3, b"k2")], batch)
    batch.write()
    sm.batch_written()
    seen = [ev.kv.key for r in stream.take() for ev in r.events]
    assert seen == [b"k1", b"k2"]
    db.close()
