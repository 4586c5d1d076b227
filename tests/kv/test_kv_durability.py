"""Reopen, corruption detection, HashKV and snapshot/restore."""

from __future__ import annotations

import io
from pathlib import Path

import plyvel
import pytest
from kvharness import Harness, kvs

from flotilla.node.api.etcdpb import rpc_pb2 as pb
from flotilla.node.kv import errors, snapshot
from flotilla.node.kv.store import MvccStore


def workload(h: Harness) -> None:
    h.put(b"a", b"1", lease=5)
    h.put(b"b", b"2")
    h.put(b"a", b"3", lease=5)
    h.delete(b"b")
    h.put(b"c", b"4", lease=6)
    h.txn(
        pb.TxnRequest(
            success=[
                pb.RequestOp(request_put=pb.PutRequest(key=b"d", value=b"5")),
                pb.RequestOp(request_put=pb.PutRequest(key=b"e", value=b"6", lease=5)),
            ]
        )
    )


def test_reopen_rebuilds_index_and_state(h: Harness) -> None:
    base = h.store.revision
    workload(h)
    before = h.get(b"\x00", b"\x00")
    store = h.reopen()
    assert store.revision == base + 6
    after = h.get(b"\x00", b"\x00")
    assert after == before
    assert h.get(b"b", revision=base + 3).kvs[0].value == b"2"
    assert store.keys_for_lease(5) == [b"a", b"e"]
    assert store.keys_for_lease(6) == [b"c"]
    kv = h.get(b"a").kvs[0]
    assert (kv.create_revision, kv.mod_revision, kv.version, kv.lease) == (
        base + 1,
        base + 3,
        2,
        5,
    )
    assert h.put(b"a", b"7").header.revision == base + 7


def _flip_byte(h: Harness, key: bytes, offset: int = -1) -> None:
    if h.db.closed:
        h.db = plyvel.DB(str(h.path))
    value = bytearray(h.db.get(key))
    value[offset] ^= 0x01
    h.db.put(key, bytes(value))


def test_flipped_byte_in_value_is_detected_on_read(h: Harness) -> None:
    h.put(b"a", b"hello")
    rk = next(h.db.iterator(prefix=b"kv/r", include_value=False))
    _flip_byte(h, rk)
    with pytest.raises(errors.CorruptDataError) as exc:
        h.get(b"a")
    assert exc.value.message == "etcdserver: corrupt cluster"
    assert exc.value.detail is not None and "checksum" in exc.value.detail


def test_flipped_byte_is_detected_on_open(h: Harness) -> None:
    h.put(b"a", b"hello")
    h.put(b"b", b"world")
    rk = list(h.db.iterator(prefix=b"kv/r", include_value=False))[1]
    _flip_byte(h, rk, offset=6)
    with pytest.raises(errors.CorruptDataError):
        h.reopen()


def test_record_moved_to_another_key_is_detected(h: Harness) -> None:
    h.put(b"a", b"1")
    h.put(b"a", b"2")
    first, second = list(h.db.iterator(prefix=b"kv/r"))
    h.db.put(second[0], first[1])  # revision 2's slot now holds revision 1's bytes
    with pytest.raises(errors.CorruptDataError):
        h.get(b"a")


def test_corrupt_metadata_is_detected(h: Harness) -> None:
    h.put(b"a", b"1")
    h.put(b"a", b"2")
    first = h.store.revision - 1
    h.compact(first)
    for name in (b"kv/mcurrent", b"kv/mcompacted"):
        _flip_byte(h, name)
        with pytest.raises(errors.CorruptDataError):
            h.reopen()
        _flip_byte(h, name)
    assert h.reopen().compacted_revision == first


def test_hash_kv_equal_after_identical_operations(tmp_path: Path) -> None:
    one = Harness(tmp_path / "one")
    two = Harness(tmp_path / "two")
    try:
        base = one.store.revision
        assert two.store.revision == base
        for x in (one, two):
            workload(x)
            x.compact(base + 3)
        h1 = one.store.hash_kv()
        h2 = two.store.hash_kv()
        assert h1.hash == h2.hash and h1.hash != 0
        assert (h1.compact_revision, h1.hash_revision, h1.header.revision) == (
            base + 3,
            base + 6,
            base + 6,
        )
        assert one.store.hash_kv(base + 4).hash == two.store.hash_kv(base + 4).hash
        assert one.store.hash_kv(base + 4).hash != h1.hash
        two.put(b"z")
        assert two.store.hash_kv(base + 6).hash == h1.hash
        assert two.store.hash_kv().hash != h1.hash
        with pytest.raises(errors.CompactedError):
            one.store.hash_kv(base + 2)
        with pytest.raises(errors.FutureRevisionError):
            one.store.hash_kv(99)
    finally:
        one.close()
        two.close()


def test_the_hash_read_from_the_index_or_straight_from_the_database_is_the_same(
    h: Harness,
) -> None:
    """With records still in a batch, the hash walks the key index for the revisions to read;
    once written, it reads the records up to the revision straight from a LevelDB snapshot."""
    workload(h)
    h.put(b"a", b"again")
    h.compact(h.store.revision - 3)
    first = h.store.compacted_revision
    batch = h.db.write_batch()
    for i in range(3):
        h.store.put(pb.PutRequest(key=b"p%d" % i, value=b"pending"), batch)
    h.store.delete_range(pb.DeleteRangeRequest(key=b"a"), batch)
    revs = range(first, h.store.revision + 1)
    from_index = [h.store.hash_kv(rev).hash for rev in revs]
    batch.write()
    h.store.batch_written()
    assert [h.store.hash_kv(rev).hash for rev in revs] == from_index
    assert len(set(from_index)) == len(from_index), "every revision hashes differently"


def test_hash_kv_compact_revision_is_minus_one_until_compacted(h: Harness) -> None:
    """etcd answers compact_revision -1 for a store that was never compacted."""
    empty = h.store.hash_kv()
    assert (empty.compact_revision, empty.hash_revision, empty.header.revision) == (-1, 1, 1)
    assert h.store.hash_kv(1).compact_revision == -1
    workload(h)
    assert h.store.hash_kv().compact_revision == -1
    h.reopen()
    assert h.store.hash_kv().compact_revision == -1
    h.compact(1)
    assert h.store.hash_kv().compact_revision == 1
    assert h.reopen().hash_kv().compact_revision == 1


def test_snapshot_restore_round_trip(h: Harness, tmp_path: Path) -> None:
    base = h.store.revision
    workload(h)
    h.compact(base + 2)
    buf = io.BytesIO()
    size = h.store.snapshot(buf)
    assert size == len(buf.getvalue())

    other = Harness(tmp_path / "other")
    try:
        other.put(b"stale", b"gone")
        other.put(b"stale2", b"gone")
        batch = other.db.write_batch()
        buf.seek(0)
        other.store.restore(buf, batch)
        # Readable before the batch is written...
        assert kvs(other.get(b"\x00", b"\x00")) == kvs(h.get(b"\x00", b"\x00"))
        batch.write()
        other.store.batch_written()
        # ...and after a reopen, identical in every observable way.
        store = other.reopen()
        assert store.revision == h.store.revision
        assert store.compacted_revision == base + 2
        assert other.get(b"\x00", b"\x00") == h.get(b"\x00", b"\x00")
        assert other.get(b"b", revision=base + 3) == h.get(b"b", revision=base + 3)
        assert store.hash_kv().hash == h.store.hash_kv().hash
        assert store.keys_for_lease(5) == [b"a", b"e"]
        assert other.get(b"stale").count == 0
    finally:
        other.close()


def test_snapshot_is_chunked_and_consistent_while_applying(h: Harness) -> None:
    base = h.store.revision
    for i in range(200):
        h.put(b"k%03d" % i, b"v" * 100)
    chunks = h.store.snapshot_chunks(chunk_size=4096)
    first = next(chunks)
    h.put(b"later", b"x")  # not part of the snapshot already started
    data = first + b"".join(chunks)
    assert len(first) >= 4096

    db = plyvel.DB(str(h.path.parent / "restored"), create_if_missing=True)
    try:
        store = MvccStore(db)
        with db.write_batch() as batch:
            store.restore(io.BytesIO(data), batch)
        assert store.revision == base + 200
        assert store.range(pb.RangeRequest(key=b"later")).count == 0
    finally:
        db.close()


@pytest.mark.parametrize("damage", ["flip", "truncate", "extra"])
def test_damaged_snapshot_is_rejected(h: Harness, damage: str) -> None:
    workload(h)
    data = bytearray(b"".join(h.store.snapshot_chunks()))
    if damage == "flip":
        data[len(data) // 2] ^= 0x10
    elif damage == "truncate":
        del data[-3:]
    else:
        data += b"x"
    before = h.get(b"\x00", b"\x00")
    batch = h.db.write_batch()
    with pytest.raises(errors.CorruptDataError):
        h.store.restore(io.BytesIO(bytes(data)), batch)
    batch.write()
    assert h.get(b"\x00", b"\x00") == before


def test_restore_in_the_batch_of_earlier_applies(h: Harness, tmp_path: Path) -> None:
    src = Harness(tmp_path / "src")
    try:
        src.put(b"only", b"1")
        data = b"".join(src.store.snapshot_chunks())
    finally:
        src.close()
    h.put(b"a")
    h.put(b"b")
    batch = h.db.write_batch()
    h.store.put(pb.PutRequest(key=b"pending", value=b"x"), batch)  # revision 4, not on disk
    h.store.restore(io.BytesIO(data), batch)
    batch.write()
    store = h.reopen()
    assert kvs(h.get(b"\x00", b"\x00")) == [(b"only", b"1")]
    assert store.revision == 2  # the source's: its one put after the empty store's 1


def test_restoring_an_empty_snapshot_at_revision_0_gives_revision_1(h: Harness) -> None:
    """Members that counted an empty store as revision 0 wrote that into their snapshots."""
    h.put(b"a")
    data = b"".join(snapshot.write_chunks(snapshot.Header(0, 0, 0), []))
    batch = h.db.write_batch()
    h.store.restore(io.BytesIO(data), batch)
    batch.write()
    h.store.batch_written()
    assert h.store.revision == 1
    assert h.get(b"a").count == 0
    assert h.reopen().revision == 1
    assert h.put(b"a").header.revision == 2


def test_restore_and_reopen_keep_byte_order_of_keys_written_out_of_order(
    h: Harness, tmp_path: Path
) -> None:
    """Restore and reopen build the key order once for all keys: ranges must still see
    every key in byte order, and keys added afterwards must fall into place."""
    order = [(i * 37) % 200 for i in range(200)]
    for i in order:
        h.put(b"k%03d" % i, b"%d" % i)
    want = [(b"k%03d" % i, b"%d" % i) for i in range(200)]
    data = b"".join(h.store.snapshot_chunks())

    other = Harness(tmp_path / "other")
    try:
        batch = other.db.write_batch()
        other.store.restore(io.BytesIO(data), batch)
        batch.write()
        other.store.batch_written()
        for store_of in (lambda: other.store, other.reopen):
            store_of()
            assert kvs(other.get(b"\x00", b"\x00")) == want
            assert kvs(other.get(b"k050", b"k053")) == want[50:53]
        other.put(b"k0995", b"new")
        assert [k for k, _ in kvs(other.get(b"k099", b"k100"))] == [b"k099", b"k0995"]
    finally:
        other.close()
