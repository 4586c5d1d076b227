"""How the node embeds the store: shared databases, prefixes, and concurrent readers."""

from __future__ import annotations

import threading
from pathlib import Path

import plyvel

from flotilla.node.api.etcdpb import rpc_pb2 as pb
from flotilla.node.kv.store import MvccStore


def test_applied_index_commits_atomically_with_the_entry(tmp_path: Path) -> None:
    db = plyvel.DB(str(tmp_path / "db"), create_if_missing=True)
    store = MvccStore(db, prefix=b"kv/")
    base = store.revision
    with db.write_batch(transaction=True) as batch:
        store.put(pb.PutRequest(key=b"a", value=b"1"), batch)
        batch.put(b"raft/applied", b"\x00" * 7 + b"\x01")
    store.batch_written()
    db.close()

    db = plyvel.DB(str(tmp_path / "db"))
    store = MvccStore(db, prefix=b"kv/")
    assert store.revision == base + 1 and db.get(b"raft/applied") == b"\x00" * 7 + b"\x01"
    # Other data in the same database is not the store's.
    assert store.range(pb.RangeRequest(key=b"\x00", range_end=b"\x00")).count == 1
    db.close()


def test_two_stores_in_one_database_stay_apart(tmp_path: Path) -> None:
    db = plyvel.DB(str(tmp_path / "db"), create_if_missing=True)
    one = MvccStore(db, prefix=b"one/")
    two = MvccStore(db.prefixed_db(b"two"), prefix=b"/")
    base = one.revision
    assert two.revision == base
    with db.write_batch() as batch:
        one.put(pb.PutRequest(key=b"k", value=b"1"), batch)
    with db.prefixed_db(b"two").write_batch() as batch:
        two.put(pb.PutRequest(key=b"k", value=b"2"), batch)
        two.put(pb.PutRequest(key=b"k", value=b"3"), batch)
    one2 = MvccStore(db, prefix=b"one/")
    two2 = MvccStore(db.prefixed_db(b"two"), prefix=b"/")
    assert one2.revision == base + 1 and two2.revision == base + 2
    assert one2.range(pb.RangeRequest(key=b"k")).kvs[0].value == b"1"
    assert two2.range(pb.RangeRequest(key=b"k")).kvs[0].value == b"3"
    assert len(b"".join(two2.snapshot_chunks())) > 0
    db.close()


def test_readers_run_while_the_apply_loop_writes(tmp_path: Path) -> None:
    db = plyvel.DB(str(tmp_path / "db"), create_if_missing=True)
    store = MvccStore(db)
    stop = threading.Event()
    failures: list[BaseException] = []

    def reader() -> None:
        try:
            while not stop.is_set():
                resp = store.range(pb.RangeRequest(key=b"k", range_end=b"l"))
                assert len(resp.kvs) == resp.count
                assert all(kv.value == kv.key for kv in resp.kvs)
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        for i in range(300):
            key = b"k%03d" % i
            with db.write_batch() as batch:
                store.put(pb.PutRequest(key=key, value=key), batch)
                if i % 50 == 49:
                    store.compact(pb.CompactionRequest(revision=store.revision), batch)
            store.batch_written()
    finally:
        stop.set()
        for t in threads:
            t.join()
        db.close()
    assert failures == []
