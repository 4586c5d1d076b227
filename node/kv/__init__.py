"""The replicated state machine: an MVCC key-value store with etcd v3 semantics on LevelDB.

The node applies each committed Raft entry to :class:`~flotilla.node.kv.store.MvccStore`,
which writes every change of that entry into a caller-provided LevelDB write batch so the
caller can record the Raft applied index in the same atomic write.
"""

from flotilla.node.kv.errors import CorruptDataError, EtcdError
from flotilla.node.kv.store import Applied, MvccStore

__all__ = ["Applied", "CorruptDataError", "EtcdError", "MvccStore"]
