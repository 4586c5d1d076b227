"""Who a data dir belongs to: format version, cluster id, member id, removal mark.

A member must never start on data that is not its own. Another cluster's log would be
replicated into ours; another member's log would make one vote count twice; a member that
was removed and comes back under its old id could vote in a configuration it no longer
belongs to. These checks run before Raft state is loaded and refuse with a message that says
what the data dir is and what to do.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any, Final

from flotilla.node.storage.codec import RAFT_PREFIX
from flotilla.node.storage.errors import DataDirError

FORMAT_VERSION: Final = 1
"""The on-disk format this code writes; it reads this one and older ones."""

_FORMAT_KEY: Final = b"id/format"
_CLUSTER_KEY: Final = b"id/cluster"
_MEMBER_KEY: Final = b"id/member"
_REMOVED_KEY: Final = b"id/removed"
_U64 = struct.Struct(">Q")


def _data_dir(db: Any) -> str:
    name = getattr(db, "name", None)
    return str(Path(name).parent) if name else "<unknown>"


def _get(db: Any, key: bytes) -> int | None:
    raw = db.get(key)
    if raw is None:
        return None
    if len(raw) != _U64.size:
        raise DataDirError(f"data dir {_data_dir(db)}: malformed identity record {key!r}")
    return int(_U64.unpack(raw)[0])


def ensure_identity(db: Any, cluster_id: int, member_id: int) -> None:
    """Stamp a new data dir with its identity, or check that an existing one matches."""
    where = _data_dir(db)
    version = _get(db, _FORMAT_KEY)
    if version is None:
        it = db.iterator(prefix=RAFT_PREFIX, include_value=False)
        try:
            has_raft_data = next(it, None) is not None
        finally:
            it.close()
        if has_raft_data:
            raise DataDirError(
                f"data dir {where} holds Raft data but no identity; refusing to adopt it"
            )
        with db.write_batch(sync=True) as wb:
            wb.put(_FORMAT_KEY, _U64.pack(FORMAT_VERSION))
            wb.put(_CLUSTER_KEY, _U64.pack(cluster_id))
            wb.put(_MEMBER_KEY, _U64.pack(member_id))
        return
    if version > FORMAT_VERSION:
        raise DataDirError(
            f"data dir {where} was written by a newer flotilla (format {version}); "
            f"this version reads up to format {FORMAT_VERSION}"
        )
    stored_cluster = _get(db, _CLUSTER_KEY)
    if stored_cluster != cluster_id:
        raise DataDirError(
            f"data dir {where} belongs to cluster {stored_cluster:x}, not {cluster_id:x}"
            if stored_cluster is not None
            else f"data dir {where} has no cluster id"
        )
    stored_member = _get(db, _MEMBER_KEY)
    if stored_member != member_id:
        raise DataDirError(
            f"data dir {where} belongs to member {stored_member:x}, not {member_id:x}"
            if stored_member is not None
            else f"data dir {where} has no member id"
        )
    if is_removed(db):
        raise DataDirError(
            f"member {member_id:x} was removed from cluster {cluster_id:x}; data dir {where} "
            f"must not be used again: wipe it to join as a new member"
        )


def mark_removed(db: Any) -> None:
    """Record, durably, that this member was removed from the cluster."""
    db.put(_REMOVED_KEY, b"\x01", sync=True)


def is_removed(db: Any) -> bool:
    return db.get(_REMOVED_KEY) is not None


def stored_member_id(db: Any) -> int | None:
    """The member id a data dir was stamped with, if any.

    On a restart the data dir, not the command line, says who the member is (as in etcd):
    a member that joined with ``member add`` has the id the cluster gave it.
    """
    return _get(db, _MEMBER_KEY)
