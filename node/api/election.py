"""etcd's Election service (v3electionpb): leader election on a key prefix.

clientv3/concurrency's Election run in the member (see :mod:`flotilla.node.api.concurrency`).
A candidate's key ``name/<lease hex>`` holds its value and queues by create revision, as a
Lock waiter does; the leader is the oldest key under ``name/``. A ``LeaderKey`` (name, key,
create revision, lease) identifies one term of leadership: Proclaim and Resign act only if
the key is still that incarnation, so a deposed leader cannot overwrite its successor.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

from flotilla.node.api.concurrency import (
    Cleanup,
    ElectionNoLeaderError,
    ElectionNotLeaderError,
    HubWatch,
    MissingLeaderKeyError,
    abort,
    create_if_absent,
    delete_if_created_at,
    first_create,
    if_created_at,
    prefix_end,
    session_key,
    session_lease,
    txn,
    wait_deletes,
)
from flotilla.node.api.etcdpb import kv_pb2, rpc_pb2, v3election_pb2, v3election_pb2_grpc
from flotilla.node.api.handle import NodeHandle, fill_header
from flotilla.node.kv.errors import EtcdError

log = logging.getLogger(__name__)

_PUT = kv_pb2.Event.PUT
_DELETE = kv_pb2.Event.DELETE


class ElectionService(v3election_pb2_grpc.ElectionServicer):  # type: ignore[misc]
    def __init__(self, handle: NodeHandle) -> None:
        self._h = handle
        self.cleanup = Cleanup(handle)

    def _header(self, header: rpc_pb2.ResponseHeader) -> rpc_pb2.ResponseHeader:
        out = rpc_pb2.ResponseHeader()
        out.CopyFrom(header)
        fill_header(out, self._h)
        return out

    async def Campaign(
        self, request: v3election_pb2.CampaignRequest, context: Any
    ) -> v3election_pb2.CampaignResponse:
        try:
            header, leader = await self._campaign(request)
        except EtcdError as err:
            await abort(context, err)
        return v3election_pb2.CampaignResponse(header=self._header(header), leader=leader)

    async def _campaign(
        self, request: v3election_pb2.CampaignRequest
    ) -> tuple[rpc_pb2.ResponseHeader, v3election_pb2.LeaderKey]:
        h = self._h
        prefix = request.name + b"/"
        lease = await session_lease(h, request.lease)
        key = session_key(prefix, lease)
        value = request.value
        joined = await self.cleanup.join(create_if_absent(key, value, lease, prefix), key)
        rev = joined.header.revision
        if not joined.succeeded:
            # This session already campaigns (or leads): keep its place, update its value.
            kv = joined.responses[0].response_range.kvs[0]
            rev = kv.create_revision
            if kv.value != value:
                try:
                    await _proclaim(h, key, rev, lease, value)
                except EtcdError:
                    await txn(h, delete_if_created_at(key, rev))
                    raise
        try:
            await wait_deletes(h, prefix, key, rev)
        except asyncio.CancelledError:
            self.cleanup.release(key, rev)
            raise
        leader = v3election_pb2.LeaderKey(name=request.name, key=key, rev=rev, lease=lease)
        return joined.header, leader

    async def Proclaim(
        self, request: v3election_pb2.ProclaimRequest, context: Any
    ) -> v3election_pb2.ProclaimResponse:
        h = self._h
        try:
            if not request.HasField("leader"):
                raise MissingLeaderKeyError()
            leader = request.leader
            lease = await session_lease(h, leader.lease)
            header = await _proclaim(h, leader.key, leader.rev, lease, request.value)
        except EtcdError as err:
            await abort(context, err)
        return v3election_pb2.ProclaimResponse(header=self._header(header))

    async def Resign(
        self, request: v3election_pb2.ResignRequest, context: Any
    ) -> v3election_pb2.ResignResponse:
        h = self._h
        try:
            if not request.HasField("leader"):
                raise MissingLeaderKeyError()
            leader = request.leader
            resp = await txn(h, delete_if_created_at(leader.key, leader.rev))
        except EtcdError as err:
            await abort(context, err)
        return v3election_pb2.ResignResponse(header=self._header(resp.header))

    async def Leader(
        self, request: v3election_pb2.LeaderRequest, context: Any
    ) -> v3election_pb2.LeaderResponse:
        h = self._h
        try:
            await h.read_barrier()
            got = h.store.range(first_create(request.name + b"/"))
            if not got.kvs:
                raise ElectionNoLeaderError()
        except EtcdError as err:
            await abort(context, err)
        return v3election_pb2.LeaderResponse(header=self._header(got.header), kv=got.kvs[0])

    async def Observe(
        self, request: v3election_pb2.LeaderRequest, context: Any
    ) -> AsyncIterator[v3election_pb2.LeaderResponse]:
        """Every change of leader or of the leader's value, as etcd's Election.Observe.

        The current leader first (or, with none, the first candidate to appear); then each
        value the leader proclaims, until its key goes and the next leader is looked up. As in
        etcd, a failure inside (no leader for the read barrier, history compacted under a
        client too slow to read) ends the stream without an error status.
        """
        h = self._h
        prefix = request.name + b"/"
        try:
            while True:
                await h.read_barrier()
                got = h.store.range(first_create(prefix))
                if got.kvs:
                    kv, revision = got.kvs[0], got.header.revision
                else:
                    kv = await _first_put(h, prefix, got.header.revision + 1)
                    revision = kv.mod_revision
                # Watch before sending: the leader's later values are kept however slowly
                # the client reads this response.
                with HubWatch(h, [kv.key], revision + 1) as watch:
                    yield _leader_response(self, revision, kv)
                    deleted = False
                    while not deleted:
                        resp = await watch.next()
                        for ev in resp.events:
                            if ev.type == _DELETE:
                                deleted = True
                                break
                            yield _leader_response(self, resp.header.revision, ev.kv)
        except EtcdError as err:
            log.info("observe of %r ended: %s", request.name, err)


async def _proclaim(
    h: NodeHandle, key: bytes, rev: int, lease: int, value: bytes
) -> rpc_pb2.ResponseHeader:
    put = rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=key, value=value, lease=lease))
    resp = await txn(h, if_created_at(key, rev, put))
    if not resp.succeeded:
        raise ElectionNotLeaderError()
    return resp.header


async def _first_put(h: NodeHandle, prefix: bytes, start_revision: int) -> kv_pb2.KeyValue:
    """The first key put under ``prefix`` from ``start_revision`` on: the next leader."""
    with HubWatch(h, [prefix], start_revision, range_end=prefix_end(prefix)) as watch:
        while True:
            resp = await watch.next()
            for ev in resp.events:
                if ev.type == _PUT:
                    leader: kv_pb2.KeyValue = ev.kv  # the container's items are untyped
                    return leader


def _leader_response(
    service: ElectionService, revision: int, kv: kv_pb2.KeyValue
) -> v3election_pb2.LeaderResponse:
    header = rpc_pb2.ResponseHeader(revision=revision)
    return v3election_pb2.LeaderResponse(header=service._header(header), kv=kv)
