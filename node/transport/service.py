"""The receiving side of the member-to-member protocol: the RaftPeer gRPC service.

Batches are checked against their checksum, decoded and handed to the node in the order they
arrived; the node's callback is synchronous and cheap (it queues the message for the driver's
next turn), so a batch is delivered without yielding to the event loop in between. Anything
from another cluster, and any batch damaged on the way, is refused before a single message of
it is delivered.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from flotilla.node.raft.types import Message
from flotilla.node.transport import snapshot
from flotilla.node.transport.codec import ChecksumError, CodecError, open_batch
from flotilla.node.transport.pb import raftpeer_pb2 as pb
from flotilla.node.transport.pb import raftpeer_pb2_grpc as pb_grpc
from flotilla.node.transport.renewals import NOT_FOUND
from flotilla.node.transport.stream import REPLY_URLS

log = logging.getLogger(__name__)


class RaftPeerService(pb_grpc.RaftPeerServicer):  # type: ignore[misc]
    def __init__(
        self,
        cluster_id: int,
        member_id: int,
        on_message: Callable[[Message], None],
        on_lease_renew: Callable[[int], Awaitable[int]],
        on_members: Callable[[], bytes] | None = None,
        on_sender: Callable[[int, list[str]], None] | None = None,
        on_lease_remaining: Callable[[int], int] | None = None,
        on_hash: Callable[[int, int], Awaitable[pb.PeerHashResponse]] | None = None,
        snapshot_sink: Callable[[], snapshot.Sink] | None = None,
    ) -> None:
        self._snapshot_sink = snapshot_sink
        self._on_members = on_members
        self._on_hash = on_hash
        self._on_lease_remaining = on_lease_remaining
        self._on_sender = on_sender
        self._cluster_id = cluster_id
        self._member_id = member_id
        self._on_message = on_message
        self._on_lease_renew = on_lease_renew

    async def _refuse_foreign(self, context: Any, cluster_id: int, from_id: int) -> None:
        """End the call unless the sender belongs to this member's cluster."""
        if cluster_id != self._cluster_id:
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"member {from_id:x} of cluster {cluster_id:x} reached member "
                f"{self._member_id:x} of cluster {self._cluster_id:x}",
            )

    async def Send(
        self, request_iterator: AsyncIterator[pb.MessageBatch], context: Any
    ) -> pb.SendSummary:
        batches = count = 0
        me = self._member_id
        deliver = self._on_message
        reply = dict(context.invocation_metadata() or ()).get(REPLY_URLS)
        reply_urls = reply.split(",") if reply else []
        on_sender = self._on_sender if reply_urls else None
        cluster_id = self._cluster_id
        async for batch in request_iterator:
            if batch.cluster_id != cluster_id:  # checked here: no coroutine per batch
                await self._refuse_foreign(context, batch.cluster_id, batch.from_id)
            try:
                messages = open_batch(batch)
            except ChecksumError as exc:
                # The stream is ended, not just the batch skipped: damage on a connection
                # says nothing good of what follows on it. The sender reconnects, and Raft
                # sends again what was lost.
                log.warning("refused a batch: %s", exc)
                await context.abort(grpc.StatusCode.DATA_LOSS, str(exc))
            except CodecError as exc:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            if on_sender is not None:
                on_sender(batch.from_id, reply_urls)
            for m in messages:
                if m.to == me:
                    deliver(m)
                else:
                    log.debug("dropping %r: addressed to another member", m)
            batches += 1
            count += len(messages)
        return pb.SendSummary(batches=batches, messages=count)

    async def SendSnapshot(
        self, request_iterator: AsyncIterator[pb.SnapshotChunk], context: Any
    ) -> pb.SnapshotAck:
        try:
            m, size = await snapshot.receive(
                request_iterator, self._cluster_id, self._snapshot_sink
            )
        except snapshot.SnapshotRejected as exc:
            log.warning("refused a snapshot: %s", exc.message)
            await context.abort(exc.code, exc.message)
        self._on_message(m)
        return pb.SnapshotAck(bytes=size)

    async def LeaseRenew(
        self, request: pb.LeaseRenewRequest, context: Any
    ) -> pb.LeaseRenewResponse:
        await self._refuse_foreign(context, request.cluster_id, request.from_id)
        try:
            ttl = await self._on_lease_renew(request.lease_id)
        except Exception as exc:
            await context.abort(_status_of(exc), str(exc))
        return pb.LeaseRenewResponse(ttl=ttl)

    async def LeaseRenewBatch(
        self, request: pb.LeaseRenewBatchRequest, context: Any
    ) -> pb.LeaseRenewBatchResponse:
        await self._refuse_foreign(context, request.cluster_id, request.from_id)
        # All at once: each renewal waits for the leader to confirm its leadership, and
        # renewals waiting together share one confirmation round.
        results = await asyncio.gather(
            *(self._on_lease_renew(lease_id) for lease_id in request.lease_ids),
            return_exceptions=True,
        )
        ttls = []
        for result in results:
            if isinstance(result, Exception):
                code = _status_of(result)
                if code == grpc.StatusCode.NOT_FOUND:
                    ttls.append(NOT_FOUND)  # that lease's answer; the others still count
                    continue
                # Anything else (no longer the leader) is the whole call's answer.
                await context.abort(code, str(result))
            elif isinstance(result, BaseException):
                raise result
            else:
                ttls.append(result)
        return pb.LeaseRenewBatchResponse(ttls=ttls)

    async def LeaseRemaining(
        self, request: pb.LeaseRenewRequest, context: Any
    ) -> pb.LeaseRemainingResponse:
        await self._refuse_foreign(context, request.cluster_id, request.from_id)
        if self._on_lease_remaining is None:
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, "lease clocks are not served here")
        assert self._on_lease_remaining is not None
        try:
            ttl = self._on_lease_remaining(request.lease_id)
        except Exception as exc:
            await context.abort(_status_of(exc), str(exc))
        return pb.LeaseRemainingResponse(ttl=ttl)

    async def HashKV(self, request: pb.PeerHashRequest, context: Any) -> pb.PeerHashResponse:
        await self._refuse_foreign(context, request.cluster_id, request.from_id)
        if self._on_hash is None:
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, "hashes are not served here")
        assert self._on_hash is not None
        try:
            resp = await self._on_hash(request.revision, request.applied_index)
        except Exception as exc:
            await context.abort(_status_of(exc), str(exc))
        resp.member_id = self._member_id
        return resp

    async def Members(self, request: pb.MembersRequest, context: Any) -> pb.MembersResponse:
        if request.cluster_id != self._cluster_id:
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"asked for members of cluster {request.cluster_id:x}; this member belongs "
                f"to cluster {self._cluster_id:x}",
            )
        if self._on_members is None:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "member list not available yet")
        assert self._on_members is not None
        return pb.MembersResponse(cluster_id=self._cluster_id, members=self._on_members())


def _status_of(exc: Exception) -> grpc.StatusCode:
    """The gRPC status an error carries (the store's etcd errors do), UNKNOWN otherwise, so
    that a follower answers its client exactly as the leader would have."""
    code = getattr(exc, "code", None)
    return code if isinstance(code, grpc.StatusCode) else grpc.StatusCode.UNKNOWN
