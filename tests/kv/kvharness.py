"""A store on a real LevelDB in a temporary folder, for the store tests (no mocks)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from flotilla.node.api.etcdpb import rpc_pb2 as pb
from flotilla.node.kv.store import Applied, MvccStore
from flotilla.node.storage.leveldb import open_db

T = TypeVar("T")


class Harness:
    """A store plus helpers that apply each request in its own committed batch."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.db: Any = open_db(path)
        self.store = MvccStore(self.db)

    def commit(self, fn: Callable[[Any], Applied[T]]) -> Applied[T]:
        batch = self.db.write_batch()
        result = fn(batch)
        batch.write()
        self.store.batch_written()
        return result

    def put(self, key: bytes, value: bytes = b"", **kw: Any) -> pb.PutResponse:
        req = pb.PutRequest(key=key, value=value, **kw)
        return self.commit(lambda b: self.store.put(req, b)).response

    def delete(self, key: bytes, range_end: bytes = b"", **kw: Any) -> pb.DeleteRangeResponse:
        req = pb.DeleteRangeRequest(key=key, range_end=range_end, **kw)
        return self.commit(lambda b: self.store.delete_range(req, b)).response

    def txn(self, req: pb.TxnRequest) -> pb.TxnResponse:
        return self.commit(lambda b: self.store.txn(req, b)).response

    def get(self, key: bytes, range_end: bytes = b"", **kw: Any) -> pb.RangeResponse:
        return self.store.range(pb.RangeRequest(key=key, range_end=range_end, **kw))

    def compact(self, rev: int) -> pb.CompactionResponse:
        req = pb.CompactionRequest(revision=rev)
        return self.commit(lambda b: self.store.compact(req, b)).response

    def reopen(self) -> MvccStore:
        self.db.close()
        self.db = open_db(self.path)
        self.store = MvccStore(self.db)
        return self.store

    def close(self) -> None:
        if not self.db.closed:
            self.db.close()


def kvs(resp: pb.RangeResponse) -> list[tuple[bytes, bytes]]:
    return [(kv.key, kv.value) for kv in resp.kvs]
