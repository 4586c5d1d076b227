"""The LevelDB options a member opens its database with."""

from __future__ import annotations

import os
from pathlib import Path

import plyvel
import pytest

from flotilla.node.storage.leveldb import compact_all, open_db


def _records(n: int) -> list[tuple[bytes, bytes]]:
    # Compressible values, so that an earlier version's Snappy blocks are really compressed.
    return [(b"k%08d" % i, b"v" * 200 + b"%d" % i) for i in range(n)]


def test_a_database_written_with_snappy_stays_readable(tmp_path: Path) -> None:
    """Data directories of earlier versions were written with LevelDB's default Snappy."""
    path = tmp_path / "db"
    old = plyvel.DB(str(path), create_if_missing=True, compression="snappy")
    with old.write_batch() as batch:
        for key, value in _records(20_000):
            batch.put(key, value)
    old.compact_range()
    old.close()

    db = open_db(path)
    try:
        assert list(db.iterator()) == _records(20_000)
        # New tables are written uncompressed beside the old ones, and a compaction that
        # merges both kinds loses nothing.
        with db.write_batch() as batch:
            for i in range(0, 20_000, 2):
                batch.delete(b"k%08d" % i)
            batch.put(b"new", os.urandom(300))
        db.compact_range()
        left = dict(db.iterator())
        assert len(left) == 10_001
        assert left[b"k%08d" % 19_999] == b"v" * 200 + b"19999"
    finally:
        db.close()


def test_tables_are_written_uncompressed(tmp_path: Path) -> None:
    """Values clients store are often incompressible; the tables hold them as they are."""
    path = tmp_path / "db"
    db = open_db(path)
    with db.write_batch() as batch:
        for key, value in _records(20_000):
            batch.put(key, value)
    db.compact_range()
    db.close()
    raw = sum(len(k) + len(v) for k, v in _records(20_000))
    tables = sum(p.stat().st_size for p in path.glob("*.ldb"))
    # Snappy shrinks these values about tenfold; uncompressed tables are at least their size.
    assert tables >= raw, f"tables {tables} bytes for {raw} bytes of records: compressed?"


def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.iterdir())


@pytest.mark.parametrize("records", [20, 2_000], ids=["memtable-only", "several-levels"])
def test_compact_all_gives_back_the_space_of_deleted_records(tmp_path: Path, records: int) -> None:
    """Whether the records are all still in the memtable or spread over tables of several
    levels, the space of the deleted half comes back and the other half stays."""
    path = tmp_path / "db"
    db = open_db(path)
    try:
        values = {b"big%05d" % i: os.urandom(20_000) for i in range(records)}
        for key, value in values.items():
            db.put(key, value)
        for i in range(0, records, 2):
            db.delete(b"big%05d" % i)
        before = _size(path)
        compact_all(db)
        after = _size(path)
        assert after < before * 0.6, f"{before} -> {after} bytes: deleted records kept"
        assert dict(db.iterator()) == {k: v for i, (k, v) in enumerate(values.items()) if i % 2}
    finally:
        db.close()
