from __future__ import annotations

from pathlib import Path

import plyvel
import pytest

from flotilla.node import statesnap

PREFIXES = (b"kv/", b"ls/")


def test_round_trip_replaces_only_the_state_prefixes(tmp_path: Path) -> None:
    src = plyvel.DB(str(tmp_path / "src"), create_if_missing=True)
    src.put(b"kv/a", b"1")
    src.put(b"ls/7", b"lease")
    src.put(b"r/e/1", b"raft log, not state")
    with src.snapshot() as view:
        data = statesnap.dump(view, PREFIXES)
    dst = plyvel.DB(str(tmp_path / "dst"), create_if_missing=True)
    dst.put(b"kv/stale", b"x")
    dst.put(b"r/e/9", b"own log")
    statesnap.restore(dst, data, PREFIXES)
    assert dict(dst.iterator()) == {b"kv/a": b"1", b"ls/7": b"lease", b"r/e/9": b"own log"}


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_damaged_snapshot_is_refused_and_changes_nothing(tmp_path: Path, damage: str) -> None:
    db = plyvel.DB(str(tmp_path / "db"), create_if_missing=True)
    db.put(b"kv/a", b"1")
    data = bytearray(statesnap.dump(db, PREFIXES))
    if damage == "flip":
        data[12] ^= 0x40
    else:
        del data[-5:]
    db.put(b"kv/b", b"2")
    with pytest.raises(statesnap.SnapshotCorrupt):
        statesnap.restore(db, bytes(data), PREFIXES)
    assert dict(db.iterator()) == {b"kv/a": b"1", b"kv/b": b"2"}
