"""Key arithmetic of the lock and election recipes, against clientv3's spelling."""

from __future__ import annotations

from flotilla.node.api.concurrency import prefix_end, session_key


def test_prefix_end_matches_clientv3() -> None:
    assert prefix_end(b"mylock/") == b"mylock0"
    assert prefix_end(b"a\xff") == b"b"
    assert prefix_end(b"\xff\xff") == b"\x00"


def test_session_key_spells_the_lease_as_go_does() -> None:
    assert session_key(b"l/", 0x694D77A6F3C8B00F) == b"l/694d77a6f3c8b00f"
    assert session_key(b"l/", -10) == b"l/-a"
