"""etcd's KV service: Range, Put, DeleteRange, Txn and Compact over the member.

Requests are validated here, before anything is proposed, as etcd's gRPC layer does, so a
malformed request never costs a Raft round. Writes are proposed and answered with the apply
result. Reads are served from the local store: linearizable ones (the default) after a read
barrier, ``serializable`` ones at once. A txn with only Range ops is a read too, as in etcd:
no proposal, just the barrier (skipped if every Range in it is serializable).
"""

from __future__ import annotations

from typing import Any

from flotilla.node.api.etcdpb import rpc_pb2, rpc_pb2_grpc
from flotilla.node.api.handle import NodeHandle, abort, check_size, fill_header, propose
from flotilla.node.kv.errors import EtcdError
from flotilla.node.kv.store import is_read_only
from flotilla.node.kv.validate import check_delete, check_put, check_range, check_txn


def _serializable(req: rpc_pb2.TxnRequest) -> bool:
    """etcd's isTxnSerializable: every op of both branches is a serializable Range."""
    for op in (*req.success, *req.failure):
        if op.WhichOneof("request") != "request_range" or not op.request_range.serializable:
            return False
    return True


class KVService(rpc_pb2_grpc.KVServicer):  # type: ignore[misc]
    def __init__(self, handle: NodeHandle) -> None:
        self._h = handle

    async def Range(self, request: rpc_pb2.RangeRequest, context: Any) -> rpc_pb2.RangeResponse:
        h = self._h
        try:
            check_range(request)
            if not request.serializable:
                await h.read_barrier()
            resp = h.store.range(request)
        except EtcdError as err:
            await abort(context, err)
        fill_header(resp.header, h)
        return resp

    async def Put(self, request: rpc_pb2.PutRequest, context: Any) -> rpc_pb2.PutResponse:
        try:
            check_put(request)
            check_size(request)
            resp: rpc_pb2.PutResponse = await propose(self._h, request)
        except EtcdError as err:
            await abort(context, err)
        fill_header(resp.header, self._h)
        return resp

    async def DeleteRange(
        self, request: rpc_pb2.DeleteRangeRequest, context: Any
    ) -> rpc_pb2.DeleteRangeResponse:
        try:
            check_delete(request)
            check_size(request)
            resp: rpc_pb2.DeleteRangeResponse = await propose(self._h, request)
        except EtcdError as err:
            await abort(context, err)
        fill_header(resp.header, self._h)
        return resp

    async def Txn(self, request: rpc_pb2.TxnRequest, context: Any) -> rpc_pb2.TxnResponse:
        h = self._h
        try:
            check_txn(request, h.store.max_txn_ops)
            if is_read_only(request):
                if not _serializable(request):
                    await h.read_barrier()
                resp = h.store.read_txn(request)
            else:
                check_size(request)
                resp = await propose(h, request)
        except EtcdError as err:
            await abort(context, err)
        fill_header(resp.header, h)
        return resp

    async def Compact(
        self, request: rpc_pb2.CompactionRequest, context: Any
    ) -> rpc_pb2.CompactionResponse:
        try:
            resp: rpc_pb2.CompactionResponse = await propose(self._h, request)
        except EtcdError as err:
            await abort(context, err)
        fill_header(resp.header, self._h)
        return resp
