"""The generated stubs carry etcd requests over real gRPC, and store errors map to statuses."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import plyvel
import pytest

from flotilla.node.api.etcdpb import rpc_pb2 as pb
from flotilla.node.api.etcdpb import rpc_pb2_grpc
from flotilla.node.kv.errors import EtcdError
from flotilla.node.kv.store import MvccStore


class _KV(rpc_pb2_grpc.KVServicer):
    """Just enough of a KV service to exercise the wire; the real one lives in the node."""

    def __init__(self, db: Any, store: MvccStore) -> None:
        self.db = db
        self.store = store

    def _write(self, fn: Any, context: grpc.ServicerContext) -> Any:
        try:
            with self.db.write_batch() as batch:
                applied = fn(batch)
            self.store.batch_written()
            return applied.response
        except EtcdError as err:
            context.abort(err.code, err.message)

    def Put(self, request: pb.PutRequest, context: grpc.ServicerContext) -> pb.PutResponse:
        return self._write(lambda b: self.store.put(request, b), context)

    def Range(self, request: pb.RangeRequest, context: grpc.ServicerContext) -> pb.RangeResponse:
        try:
            return self.store.range(request)
        except EtcdError as err:
            context.abort(err.code, err.message)


@pytest.fixture
def stub(tmp_path: Path) -> Iterator[rpc_pb2_grpc.KVStub]:
    db = plyvel.DB(str(tmp_path / "db"), create_if_missing=True)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    rpc_pb2_grpc.add_KVServicer_to_server(_KV(db, MvccStore(db)), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield rpc_pb2_grpc.KVStub(channel)
    finally:
        channel.close()
        server.stop(None).wait()
        db.close()


def test_put_and_range_over_grpc(stub: rpc_pb2_grpc.KVStub) -> None:
    base = stub.Range(pb.RangeRequest(key=b"foo")).header.revision
    assert stub.Put(pb.PutRequest(key=b"foo", value=b"bar")).header.revision == base + 1
    resp = stub.Range(pb.RangeRequest(key=b"foo"))
    assert [(kv.key, kv.value, kv.version) for kv in resp.kvs] == [(b"foo", b"bar", 1)]


def test_errors_reach_the_client_as_etcd_statuses(stub: rpc_pb2_grpc.KVStub) -> None:
    stub.Put(pb.PutRequest(key=b"foo", value=b"bar"))
    with pytest.raises(grpc.RpcError) as exc:
        stub.Range(pb.RangeRequest(key=b"foo", revision=5))
    assert exc.value.code() == grpc.StatusCode.OUT_OF_RANGE
    assert exc.value.details() == "etcdserver: mvcc: required revision is a future revision"
    with pytest.raises(grpc.RpcError) as exc:
        stub.Put(pb.PutRequest(key=b"", value=b"x"))
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert exc.value.details() == "etcdserver: key is not provided"
