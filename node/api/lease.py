"""etcd's Lease service: Grant, Revoke, KeepAlive, TimeToLive and Leases.

Grant and Revoke are replicated (proposed). KeepAlive is leader-local state: the handle
renews on the leader, forwarding when this member is not. As in etcd, keep-alive of an
unknown or expired lease is not an error but a response with TTL 0, and TimeToLive of an
unknown lease answers TTL -1.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

from flotilla.node.api.etcdpb import rpc_pb2, rpc_pb2_grpc
from flotilla.node.api.handle import NodeHandle, abort, fill_header, propose
from flotilla.node.kv.errors import EtcdError, LeaseNotFoundError, LeaseTTLTooLargeError
from flotilla.node.kv.lease import MAX_LEASE_TTL


class LeaseService(rpc_pb2_grpc.LeaseServicer):  # type: ignore[misc]
    def __init__(self, handle: NodeHandle) -> None:
        self._h = handle

    async def LeaseGrant(
        self, request: rpc_pb2.LeaseGrantRequest, context: Any
    ) -> rpc_pb2.LeaseGrantResponse:
        try:
            if request.TTL > MAX_LEASE_TTL:
                raise LeaseTTLTooLargeError()
            resp: rpc_pb2.LeaseGrantResponse = await propose(self._h, request)
        except EtcdError as err:
            await abort(context, err)
        fill_header(resp.header, self._h)
        return resp

    async def LeaseRevoke(
        self, request: rpc_pb2.LeaseRevokeRequest, context: Any
    ) -> rpc_pb2.LeaseRevokeResponse:
        try:
            resp: rpc_pb2.LeaseRevokeResponse = await propose(self._h, request)
        except EtcdError as err:
            await abort(context, err)
        fill_header(resp.header, self._h)
        return resp

    async def LeaseKeepAlive(
        self, request_iterator: AsyncIterator[rpc_pb2.LeaseKeepAliveRequest], context: Any
    ) -> AsyncIterator[rpc_pb2.LeaseKeepAliveResponse]:
        h = self._h
        async for req in request_iterator:
            try:
                ttl = await h.lease_renew(req.ID)
            except LeaseNotFoundError:
                ttl = 0
            except EtcdError as err:
                await abort(context, err)
            resp = rpc_pb2.LeaseKeepAliveResponse(ID=req.ID, TTL=ttl)
            fill_header(resp.header, h)
            yield resp

    async def LeaseTimeToLive(
        self, request: rpc_pb2.LeaseTimeToLiveRequest, context: Any
    ) -> rpc_pb2.LeaseTimeToLiveResponse:
        h = self._h
        try:
            await h.read_barrier()
        except EtcdError as err:
            await abort(context, err)
        resp = h.lessor.time_to_live(request.ID, request.keys, time.monotonic())
        if resp.TTL != -1 and not h.lessor.primary:
            # Only the leader runs lease clocks; elsewhere the lessor knows the granted TTL.
            # etcd forwards the request to the leader, and so do we, for the time left.
            try:
                remaining = await h.lease_remaining(request.ID)
            except EtcdError as err:
                await abort(context, err)
            if remaining == -1:  # revoked or expired since the barrier: the leader knows
                resp = rpc_pb2.LeaseTimeToLiveResponse(ID=request.ID, TTL=-1)
            elif remaining is not None:
                resp.TTL = remaining
        fill_header(resp.header, h)
        return resp

    async def LeaseLeases(
        self, request: rpc_pb2.LeaseLeasesRequest, context: Any
    ) -> rpc_pb2.LeaseLeasesResponse:
        h = self._h
        try:
            await h.read_barrier()
        except EtcdError as err:
            await abort(context, err)
        resp = h.lessor.leases()
        fill_header(resp.header, h)
        return resp
