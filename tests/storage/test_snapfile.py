"""Snapshot files are written atomically and verified on read."""

from __future__ import annotations

from pathlib import Path

import pytest
from datadir import DataDir

from flotilla.node.raft.types import ConfState, SnapshotMeta
from flotilla.node.storage import CorruptDataError

CONF = ConfState(frozenset({1, 2, 3}), learners=frozenset({7}))


def test_round_trip_from_bytes_and_from_chunks(dd: DataDir) -> None:
    meta = SnapshotMeta(100, 4, CONF)
    path = dd.storage.save_snapshot(meta, b"x" * 1000)
    assert path.name == "0000000000000004-0000000000000064.snap"
    assert dd.storage.read_snapshot(path) == (meta, b"x" * 1000)
    meta2 = SnapshotMeta(200, 5, CONF)
    chunks = [bytes([i]) * 70_000 for i in range(20)]
    path2 = dd.storage.save_snapshot(meta2, iter(chunks))
    assert dd.storage.read_snapshot(path2) == (meta2, b"".join(chunks))
    assert dd.storage.latest_snapshot_path() == path2
    assert not list(path.parent.glob("*.tmp"))


def test_empty_body(dd: DataDir) -> None:
    meta = SnapshotMeta(1, 1, CONF)
    assert dd.storage.read_snapshot(dd.storage.save_snapshot(meta, b"")) == (meta, b"")


def test_latest_and_purge(dd: DataDir) -> None:
    assert dd.storage.latest_snapshot_path() is None
    paths = [
        dd.storage.save_snapshot(SnapshotMeta(i * 10, 1 + i // 2, CONF), b"s") for i in (1, 2, 3, 4)
    ]
    leftover = paths[0].parent / "0000000000000009-0000000000000999.snap.tmp"
    leftover.write_bytes(b"half a snapshot")
    assert dd.storage.latest_snapshot_path() == paths[-1]
    dd.storage.purge_snapshots(keep=2)
    assert sorted(p.name for p in paths[0].parent.iterdir()) == [p.name for p in paths[2:]]


def _save(dd: DataDir) -> Path:
    return dd.storage.save_snapshot(SnapshotMeta(9, 2, CONF), bytes(range(256)) * 40)


@pytest.mark.parametrize("where", ["magic", "header", "body", "trailer-length", "trailer-sha"])
def test_bit_flip_is_detected(dd: DataDir, where: str) -> None:
    path = _save(dd)
    raw = bytearray(path.read_bytes())
    pos = {"magic": 0, "header": 20, "body": 5000, "trailer-length": -35, "trailer-sha": -1}[where]
    raw[pos] ^= 0x01
    path.write_bytes(bytes(raw))
    with pytest.raises(CorruptDataError) as err:
        dd.storage.read_snapshot(path)
    assert path.name in str(err.value)


@pytest.mark.parametrize("keep", [0, 10, 5000, -1])
def test_truncated_file_is_detected(dd: DataDir, keep: int) -> None:
    path = _save(dd)
    raw = path.read_bytes()
    path.write_bytes(raw[:keep])
    with pytest.raises(CorruptDataError):
        dd.storage.read_snapshot(path)


def test_file_renamed_to_another_snapshot_is_detected(dd: DataDir) -> None:
    path = _save(dd)
    other = path.with_name("0000000000000002-0000000000000010.snap")
    path.rename(other)
    with pytest.raises(CorruptDataError, match="not the one its name says"):
        dd.storage.read_snapshot(other)


def test_purge_keeps_the_recorded_snapshot(dd: DataDir) -> None:
    recorded = SnapshotMeta(10, 1, CONF)
    kept = dd.storage.save_snapshot(recorded, b"s")
    with dd.db.write_batch(sync=True) as wb:
        dd.storage.record_snapshot(wb, recorded)
    newer = [dd.storage.save_snapshot(SnapshotMeta(i, 2, CONF), b"s") for i in (20, 30)]
    dd.storage.purge_snapshots(keep=1)
    assert sorted(p.name for p in kept.parent.iterdir()) == [kept.name, newer[-1].name]
    assert dd.storage.load_snapshot() == (recorded, b"s")
