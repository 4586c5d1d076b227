"""A member's data dir for storage tests: real LevelDB files, closed and reopened like a
restarting process."""

from __future__ import annotations

from pathlib import Path

import plyvel

from flotilla.node.raft.types import Ready
from flotilla.node.storage import RaftStorage
from flotilla.node.storage.leveldb import open_db


class DataDir:
    """A member's data dir that tests can close and reopen like a restarting process."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.db = open_db(root / "db")
        self.storage = RaftStorage(self.db, root / "snap")

    def persist(self, rd: Ready) -> None:
        """What the driver does each turn: stage into one batch, write it synced."""
        with self.db.write_batch(sync=True) as wb:
            self.storage.stage(wb, rd)

    def reopen(self) -> RaftStorage:
        self.db.close()
        self.db = plyvel.DB(str(self.root / "db"))
        self.storage = RaftStorage(self.db, self.root / "snap")
        return self.storage

    def close(self) -> None:
        if not self.db.closed:
            self.db.close()
