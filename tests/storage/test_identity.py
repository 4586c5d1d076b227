"""A data dir refuses to serve another cluster, another member, a newer format or a removed
member."""

from __future__ import annotations

import struct

import pytest
from datadir import DataDir

from flotilla.node.raft.types import Entry, Ready
from flotilla.node.storage import DataDirError, ensure_identity, is_removed, mark_removed


def test_new_data_dir_is_stamped_and_accepted_again(dd: DataDir) -> None:
    ensure_identity(dd.db, 0xC1, 0x11)
    dd.reopen()
    ensure_identity(dd.db, 0xC1, 0x11)
    assert not is_removed(dd.db)


def test_other_cluster_is_refused(dd: DataDir) -> None:
    ensure_identity(dd.db, 0xC1, 0x11)
    with pytest.raises(DataDirError, match="belongs to cluster c1, not c2") as err:
        ensure_identity(dd.db, 0xC2, 0x11)
    assert str(dd.root) in str(err.value)


def test_other_member_is_refused(dd: DataDir) -> None:
    ensure_identity(dd.db, 0xC1, 0x11)
    with pytest.raises(DataDirError, match="belongs to member 11, not 12"):
        ensure_identity(dd.db, 0xC1, 0x12)


def test_newer_format_is_refused(dd: DataDir) -> None:
    ensure_identity(dd.db, 0xC1, 0x11)
    dd.db.put(b"id/format", struct.pack(">Q", 2))
    with pytest.raises(DataDirError, match=r"written by a newer flotilla \(format 2\)"):
        ensure_identity(dd.db, 0xC1, 0x11)


def test_removed_member_is_refused(dd: DataDir) -> None:
    ensure_identity(dd.db, 0xC1, 0x11)
    mark_removed(dd.db)
    dd.reopen()
    assert is_removed(dd.db)
    with pytest.raises(DataDirError, match="was removed"):
        ensure_identity(dd.db, 0xC1, 0x11)


def test_raft_data_without_identity_is_refused(dd: DataDir) -> None:
    dd.persist(Ready(entries=[Entry(1, 1, b"x")]))
    with pytest.raises(DataDirError, match="no identity"):
        ensure_identity(dd.db, 0xC1, 0x11)


def test_store_data_alone_does_not_block_stamping(dd: DataDir) -> None:
    dd.db.put(b"kv/something", b"v")
    ensure_identity(dd.db, 0xC1, 0x11)
