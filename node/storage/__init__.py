"""The member's durable state on LevelDB: Raft log, hard state, snapshots, identity.

One LevelDB per member holds everything (the MVCC store lives beside the Raft records under
its own prefix), so one synced write batch makes a turn's entries, hard state and applied
changes durable together. Snapshot data is too large for a batch and lives in files.
"""

from flotilla.node.storage.errors import CorruptDataError, DataDirError, StorageError
from flotilla.node.storage.identity import ensure_identity, is_removed, mark_removed
from flotilla.node.storage.raftlog import RaftStorage

__all__ = [
    "CorruptDataError",
    "DataDirError",
    "RaftStorage",
    "StorageError",
    "ensure_identity",
    "is_removed",
    "mark_removed",
]
