"""etcd's Lock service (v3lockpb): a distributed mutex on a key prefix.

``Lock(name, lease)`` is clientv3/concurrency's Mutex run in the member (see
:mod:`flotilla.node.api.concurrency`): the waiter's key ``name/<lease hex>`` joins a queue
ordered by create revision, and the lock is granted once every older key is gone and the
waiter's own key still exists. The returned key's create revision only grows from one
holder to the next, so it serves as a fencing token. ``Unlock(key)`` deletes the key; so does
expiry of its lease, which is what frees the lock of a holder that died.
"""

from __future__ import annotations

import asyncio
from typing import Any

from flotilla.node.api.concurrency import (
    Cleanup,
    SessionExpiredError,
    abort,
    create_if_absent,
    session_key,
    session_lease,
    wait_deletes,
)
from flotilla.node.api.etcdpb import rpc_pb2, v3lock_pb2, v3lock_pb2_grpc
from flotilla.node.api.handle import NodeHandle, check_size, fill_header, propose
from flotilla.node.kv.errors import EtcdError
from flotilla.node.kv.validate import check_delete


class LockService(v3lock_pb2_grpc.LockServicer):  # type: ignore[misc]
    def __init__(self, handle: NodeHandle) -> None:
        self._h = handle
        self.cleanup = Cleanup(handle)

    async def Lock(self, request: v3lock_pb2.LockRequest, context: Any) -> v3lock_pb2.LockResponse:
        try:
            key, header = await self._lock(request.name + b"/", request.lease)
        except EtcdError as err:
            await abort(context, err)
        resp = v3lock_pb2.LockResponse(key=key)
        resp.header.CopyFrom(header)
        fill_header(resp.header, self._h)
        return resp

    async def _lock(self, prefix: bytes, lease: int) -> tuple[bytes, rpc_pb2.ResponseHeader]:
        h = self._h
        lease = await session_lease(h, lease)
        key = session_key(prefix, lease)
        joined = await self.cleanup.join(create_if_absent(key, b"", lease, prefix), key)
        mine, owner = joined.responses
        rev = joined.header.revision
        if not joined.succeeded:
            # This session already queued (or holds) the lock: reuse its key.
            rev = mine.response_range.kvs[0].create_revision
        holder = owner.response_range.kvs
        if not holder or holder[0].create_revision == rev:
            return key, joined.header
        try:
            await wait_deletes(h, prefix, key, rev)
            # etcd's last check, linearizable: the session must not have expired meanwhile.
            await h.read_barrier()
        except SessionExpiredError:
            raise
        except (EtcdError, asyncio.CancelledError):
            self.cleanup.release(key, rev)
            raise
        got = h.store.range(rpc_pb2.RangeRequest(key=key))
        if not got.kvs or got.kvs[0].create_revision != rev:
            raise SessionExpiredError()
        return key, got.header

    async def Unlock(
        self, request: v3lock_pb2.UnlockRequest, context: Any
    ) -> v3lock_pb2.UnlockResponse:
        h = self._h
        delete = rpc_pb2.DeleteRangeRequest(key=request.key)
        try:
            check_delete(delete)
            check_size(delete)
            deleted: rpc_pb2.DeleteRangeResponse = await propose(h, delete)
        except EtcdError as err:
            await abort(context, err)
        resp = v3lock_pb2.UnlockResponse()
        resp.header.CopyFrom(deleted.header)
        fill_header(resp.header, h)
        return resp
