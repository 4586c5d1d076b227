"""A state machine (store, lessor, applier) on a real LevelDB, fed envelopes like Raft would."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from flotilla.node.kv import requests
from flotilla.node.kv.apply import Applier, ApplyOutput
from flotilla.node.kv.lease import Lessor
from flotilla.node.kv.store import MvccStore
from flotilla.node.storage.leveldb import open_db


class Machine:
    def __init__(self, path: Path, **lessor_kw: Any) -> None:
        self.path = path
        self.lessor_kw = lessor_kw
        self.db: Any = open_db(path)
        self.store = MvccStore(self.db)
        self.lessor = Lessor(self.db, self.store, **lessor_kw)
        self.applier = Applier(self.store, self.lessor)
        self.index = 0

    def entries(self, *reqs: Any) -> list[tuple[int, bytes]]:
        out = []
        for req in reqs:
            self.index += 1
            out.append((self.index, requests.encode(self.index.to_bytes(16, "big"), req)))
        return out

    def apply_entries(self, entries: list[tuple[int, bytes]]) -> ApplyOutput:
        batch = self.db.write_batch()
        out = self.applier.apply(entries, batch)
        batch.write()
        self.store.batch_written()
        return out

    def apply(self, *reqs: Any) -> ApplyOutput:
        return self.apply_entries(self.entries(*reqs))

    def one(self, req: Any) -> Any:
        ((_, result),) = self.apply(req).results
        return result

    def install_snapshot_of(self, src: Machine) -> None:
        """Replace this store with a snapshot of ``src``'s, as a member installing one does."""
        snap = io.BytesIO()
        src.store.snapshot(snap)
        snap.seek(0)
        batch = self.db.write_batch()
        self.store.restore(snap, batch)
        batch.write()
        self.store.batch_written()

    def reopen(self) -> None:
        self.db.close()
        self.db = open_db(self.path)
        self.store = MvccStore(self.db)
        self.lessor = Lessor(self.db, self.store, **self.lessor_kw)
        self.applier = Applier(self.store, self.lessor)

    def close(self) -> None:
        if not self.db.closed:
            self.db.close()
