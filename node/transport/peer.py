"""Transport: a member's gRPC links to its peers, for the driver loop to use.

The driver calls :meth:`Transport.send` with each turn's messages and never waits: messages
are queued per peer and written by that peer's :class:`~.stream.PeerStream`. Snapshots
(``MsgSnap``) take a separate path: a task per transfer reads the data from
``snapshot_source`` and streams it in chunks, so a large snapshot never holds up the
heartbeats and appends queued behind it. Whatever the core must hear back (peers that lost
messages, snapshot outcomes) is collected for :meth:`Transport.drain_reports`.

Incoming messages are handed to ``on_message`` in the order each peer sent them. Everything
runs on the caller's asyncio loop; the methods that are not coroutines must be called from
that loop too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, TypeVar, cast
from urllib.parse import urlsplit

import grpc

from flotilla.node.api import h2grpc
from flotilla.node.raft.types import Message, MessageType, Snapshot, SnapshotMeta
from flotilla.node.rpcdecode import DecodeGuard
from flotilla.node.tls import TlsMaterial
from flotilla.node.transport import snapshot
from flotilla.node.transport.codec import to_pb
from flotilla.node.transport.pb import raftpeer_pb2 as pb
from flotilla.node.transport.pb import raftpeer_pb2_grpc as pb_grpc
from flotilla.node.transport.reports import Report, Reports
from flotilla.node.transport.service import RaftPeerService
from flotilla.node.transport.stream import BACKOFF, PeerStream, open_channel

from . import renewals  # relative: mypy follows it (the installed package it cannot)

log = logging.getLogger(__name__)

T = TypeVar("T")

SERVER_OPTIONS: list[tuple[str, Any]] = [("grpc.max_receive_message_length", 256 << 20)]
"""The peer server is the client API's (``h2grpc``): it answers every keepalive ping the
peers' channels send (see stream.CHANNEL_OPTIONS) and never refuses them as too many."""

SnapshotSource = Callable[[], "tuple[SnapshotMeta, bytes | snapshot.Streamed] | None"]
"""The snapshot to send a member behind the compacted log, with its data; called in a worker
thread. Streamed data is made as it is sent, also in a worker thread."""

RENEW_TIMEOUT = 5.0
"""Seconds a forwarded keep-alive call may take before its clients hear of a failure."""


class UnknownPeerError(LookupError):
    """No URL is known for the member a call was addressed to."""


def grpc_target(url: str) -> str:
    """``http://host:port`` (or a bare ``host:port``) as a gRPC target ``host:port``."""
    if "://" not in url:
        return url
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"unsupported peer URL scheme in {url!r} (http or https)")
    if not parts.netloc or parts.port is None:
        raise ValueError(f"peer URL {url!r} needs a host and a port")
    return parts.netloc


class Transport:
    def __init__(
        self,
        cluster_id: int,
        member_id: int,
        on_message: Callable[[Message], None],
        on_lease_renew: Callable[[int], Awaitable[int]],
        snapshot_source: SnapshotSource,
        *,
        on_report: Callable[[], None] | None = None,
        on_members: Callable[[], bytes] | None = None,
        on_lease_remaining: Callable[[int], int] | None = None,
        on_hash: Callable[[int, int], Awaitable[pb.PeerHashResponse]] | None = None,
        snapshot_sink: Callable[[], snapshot.Sink] | None = None,
        max_queue_messages: int = 4096,
        max_queue_bytes: int = 32 << 20,
        snapshot_chunk_size: int = snapshot.DEFAULT_CHUNK_SIZE,
        snapshot_timeout: float = 600.0,
        backoff: tuple[float, float] = BACKOFF,
        tls: TlsMaterial | None = None,
        advertise_urls: list[str] | None = None,
    ) -> None:
        """``on_report`` is called whenever a report is queued, e.g. to wake the driver.

        With ``tls`` the server presents its certificate (and requires the peers' when
        ``client_cert_auth``), and every outgoing stream presents it in turn: a peer whose
        certificate does not chain to the trusted CA fails the handshake, so not one of its
        messages reaches the service."""
        self._tls = tls
        self.cluster_id = cluster_id
        self.member_id = member_id
        self._service = RaftPeerService(
            cluster_id,
            member_id,
            on_message,
            on_lease_renew,
            on_members,
            self.note_sender,
            on_lease_remaining,
            on_hash,
            snapshot_sink,
        )
        self._snapshot_source = snapshot_source
        self._reports = Reports(on_report)
        self._stream_options: dict[str, Any] = {
            "max_messages": max_queue_messages,
            "max_bytes": max_queue_bytes,
            "backoff": backoff,
            "credentials": tls.channel_credentials() if tls else None,
            "tls": tls.client_context() if tls else None,
            "reply_urls": advertise_urls,
        }
        self._chunk_size = snapshot_chunk_size
        self._snapshot_timeout = snapshot_timeout
        self._peers: dict[int, PeerStream] = {}
        self._renewals = renewals.Renewals(self._renew_batch)
        self._snapshot_tasks: dict[int, asyncio.Task[None]] = {}
        self._closing: set[asyncio.Task[None]] = set()
        self._server: Any = None
        self.port = 0
        """The port the server listens on (useful when started on port 0)."""

    # == lifecycle =============================================================================

    async def start(self, listen_url: str) -> None:
        server = h2grpc.Server(options=SERVER_OPTIONS, interceptors=[DecodeGuard()])
        pb_grpc.add_RaftPeerServicer_to_server(self._service, server)
        target = grpc_target(listen_url)
        if self._tls is not None:
            port = server.add_secure_port(target, self._tls.server_context())
        else:
            port = server.add_insecure_port(target)
        if port == 0:
            raise OSError(f"cannot listen on {target}")
        await server.start()
        self._server = server
        self.port = port

    async def stop(self, grace: float | None = 0.5) -> None:
        await self._renewals.close()
        for task in list(self._snapshot_tasks.values()):
            task.cancel()
        for task in list(self._snapshot_tasks.values()):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for member_id in list(self._peers):
            await self._peers.pop(member_id).close()
        if self._closing:
            await asyncio.gather(*self._closing)
        if self._server is not None:
            await self._server.stop(grace)
            self._server = None

    def set_peers(self, peers: dict[int, list[str]]) -> None:
        """Make the peer set (member id -> peer URLs) what membership says it is now."""
        wanted = {mid: [grpc_target(u) for u in urls] for mid, urls in peers.items()}
        wanted.pop(self.member_id, None)
        for mid in list(self._peers):
            if wanted.get(mid) != self._peers[mid].urls:
                task = asyncio.get_running_loop().create_task(self._peers.pop(mid).close())
                self._closing.add(task)
                task.add_done_callback(self._closing.discard)
        for mid, urls in wanted.items():
            if not urls:
                # Nothing to dial (the Cluster service refuses such members; this keeps an
                # old record from stopping the member): messages to it are reported lost.
                continue
            if mid not in self._peers:
                self._peers[mid] = PeerStream(
                    mid,
                    urls,
                    self.cluster_id,
                    self.member_id,
                    self._reports,
                    **self._stream_options,
                )

    def note_sender(self, member_id: int, urls: list[str]) -> None:
        """A peer sent us messages: make sure we can answer it.

        A member that missed the configuration change adding another one (it was cut off, or
        paused, when it was committed) does not know that member's URLs, and that member may
        lead now: without a way back the lagging member could never answer its probes, never
        be sent the snapshot that would teach it the membership, and stay behind forever.
        The sender's URLs come with its stream, so a stream back is opened; the next
        ``set_peers`` replaces or closes it like any other.
        """
        if member_id in self._peers or member_id == self.member_id:
            return
        try:
            targets = [grpc_target(u) for u in urls]
        except ValueError:
            log.warning("member %x sent unusable reply URLs %s", member_id, urls)
            return
        log.info("answering member %x at %s, not in the member list known here", member_id, urls)
        self._peers[member_id] = PeerStream(
            member_id, targets, self.cluster_id, self.member_id, self._reports,
            **self._stream_options,
        )  # fmt: skip

    # == sending ===============================================================================

    def send(self, messages: list[Message]) -> None:
        """Queue messages for their peers; never blocks."""
        peers = self._peers
        snap = MessageType.SNAP
        for m in messages:
            if m.type == snap:
                self._start_snapshot(m)
                continue
            stream = peers.get(m.to)
            if stream is None:
                self._reports.unreachable(m.to)
            else:
                stream.enqueue(m)

    def drain_reports(self) -> list[Report]:
        """What happened since the last call, for ``report_unreachable``/``report_snapshot``."""
        reports: list[Report] = self._reports.drain()
        return reports

    def peer_counters(self) -> dict[int, tuple[int, int]]:
        """Per peer: (bytes sent, messages dropped) by its current stream; for metrics."""
        return {mid: (s.sent_bytes, s.dropped) for mid, s in self._peers.items()}

    def queued(self, member_id: int) -> int:
        """Messages waiting for ``member_id`` (for metrics and tests)."""
        stream = self._peers.get(member_id)
        return stream.queued if stream is not None else 0

    def _start_snapshot(self, m: Message) -> None:
        stream = self._peers.get(m.to)
        if stream is None:
            self._reports.snapshot(m.to, False)
            return
        if m.to in self._snapshot_tasks:
            return  # one transfer per peer at a time; the running one reports
        task = asyncio.get_running_loop().create_task(self._send_snapshot(stream, m))
        self._snapshot_tasks[m.to] = task
        task.add_done_callback(lambda _: self._snapshot_tasks.pop(m.to, None))

    async def _send_snapshot(self, stream: PeerStream, m: Message) -> None:
        ok = False
        try:
            source = await asyncio.to_thread(self._snapshot_source)
            if source is None:
                log.warning("no snapshot to send to member %x", m.to)
                return
            meta, data = source
            # The data goes with the metadata of the snapshot it belongs to.
            header = to_pb(Message(MessageType.SNAP, m.to, m.frm, m.term, snapshot=Snapshot(meta)))
            size = data.size if isinstance(data, snapshot.Streamed) else len(data)
            chunks = snapshot.chunks(
                self.cluster_id, self.member_id, header, data, self._chunk_size
            )
            # Bounded by its size (30 s plus a second per MiB), not only by the configured
            # ceiling: a transfer stuck on a link that died under it would otherwise hold
            # the one slot this peer has for a snapshot, and every retry the leader makes
            # meanwhile is dropped, leaving the member behind for as long.
            timeout = min(self._snapshot_timeout, 30.0 + size / (1 << 20))
            log.info("sending snapshot %d (%d bytes) to member %x", meta.index, size, m.to)
            started = time.monotonic()
            await stream.stub.SendSnapshot(_made_in_thread(chunks), timeout=timeout)
            log.info(
                "sent snapshot %d to member %x in %.1fs",
                meta.index, m.to, time.monotonic() - started,
            )  # fmt: skip
            ok = True
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("snapshot to member %x failed: %s", m.to, exc)
        finally:
            self._reports.snapshot(m.to, ok)

    # == forwarding ============================================================================

    async def lease_renew(self, leader_id: int, lease_id: int) -> int:
        """Renew a lease on the leader: its TTL, or ``renewals.NOT_FOUND``.

        Keep-alives that arrive while a call is out share the next call (``Renewals``).
        Raises :class:`UnknownPeerError`, or ``grpc.aio.AioRpcError`` with the leader's
        status (e.g. UNAVAILABLE when it no longer leads).
        """
        return await self._renewals.renew(leader_id, lease_id)

    async def lease_remaining(self, leader_id: int, lease_id: int) -> int | None:
        """Seconds the leader gives the lease, ``renewals.NOT_FOUND`` if it knows none, or
        None from a leader of an earlier version, which cannot say.

        Raises :class:`UnknownPeerError`, or ``grpc.aio.AioRpcError`` with the leader's
        status (e.g. UNAVAILABLE when it no longer leads).
        """
        try:
            response = await self._unary(
                leader_id, "LeaseRemaining", self._lease_request(lease_id), RENEW_TIMEOUT
            )
        except grpc.aio.AioRpcError as err:
            if err.code() == grpc.StatusCode.UNIMPLEMENTED:
                return None
            raise
        return int(response.ttl)

    async def peer_hash(
        self, member_id: int, revision: int, applied_index: int, timeout: float
    ) -> pb.PeerHashResponse:
        """A peer's hash of its key-value history at ``revision``, once it has applied
        ``applied_index``. Raises :class:`UnknownPeerError`, or ``grpc.aio.AioRpcError`` with
        the peer's status (OUT_OF_RANGE for a revision it compacted or has not reached,
        UNIMPLEMENTED from an earlier version)."""
        request = pb.PeerHashRequest(
            cluster_id=self.cluster_id,
            from_id=self.member_id,
            revision=revision,
            applied_index=applied_index,
        )
        resp: pb.PeerHashResponse = await self._unary(member_id, "HashKV", request, timeout)
        return resp

    async def _unary(self, member_id: int, method: str, request: Any, timeout: float) -> Any:
        """A unary call to a peer, on the channel of its stream.

        The stream replaces its channel when it reconnects, which cancels the calls still
        out on the old one, and grpc.aio reports that as CancelledError: a caller would take
        it for its own cancellation and stop (a periodic task would end silently). It is
        UNAVAILABLE here, as any other lost connection.
        """
        stream = self._peers.get(member_id)
        if stream is None:
            raise UnknownPeerError(f"no peer URL known for member {member_id:x}")
        try:
            return await getattr(stream.stub, method)(request, timeout=timeout)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # the caller was cancelled
            raise grpc.aio.AioRpcError(
                grpc.StatusCode.UNAVAILABLE,
                grpc.aio.Metadata(),
                grpc.aio.Metadata(),
                details=f"the connection to member {member_id:x} was replaced during the call",
            ) from None

    def _lease_request(self, lease_id: int) -> pb.LeaseRenewRequest:
        return pb.LeaseRenewRequest(
            cluster_id=self.cluster_id, from_id=self.member_id, lease_id=lease_id
        )

    async def _renew_batch(self, leader_id: int, lease_ids: list[int]) -> list[int]:
        request = pb.LeaseRenewBatchRequest(
            cluster_id=self.cluster_id, from_id=self.member_id, lease_ids=lease_ids
        )
        try:
            response = await self._unary(leader_id, "LeaseRenewBatch", request, RENEW_TIMEOUT)
        except grpc.aio.AioRpcError as err:
            if err.code() != grpc.StatusCode.UNIMPLEMENTED:
                raise
            # A leader of an earlier version (a rolling upgrade): one call per lease.
            return list(await asyncio.gather(*(self._renew_one(leader_id, i) for i in lease_ids)))
        return list(response.ttls)

    async def _renew_one(self, leader_id: int, lease_id: int) -> int:
        try:
            response = await self._unary(
                leader_id, "LeaseRenew", self._lease_request(lease_id), RENEW_TIMEOUT
            )
        except grpc.aio.AioRpcError as err:
            if err.code() == grpc.StatusCode.NOT_FOUND:
                return renewals.NOT_FOUND
            raise
        return int(response.ttl)


async def fetch_hash(
    cluster_id: int,
    from_id: int,
    peer_urls: list[str],
    revision: int,
    timeout: float = 5.0,
    tls: TlsMaterial | None = None,
) -> pb.PeerHashResponse:
    """A peer's hash at ``revision``, asked at one of its ``peer_urls`` (for a member's
    initial corruption check, before its own transport runs)."""
    request = pb.PeerHashRequest(cluster_id=cluster_id, from_id=from_id, revision=revision)
    resp: pb.PeerHashResponse = await _first_answer(
        peer_urls, tls, lambda stub: stub.HashKV(request, timeout=timeout)
    )
    return resp


async def fetch_members(
    cluster_id: int, peer_urls: list[str], timeout: float = 5.0, tls: TlsMaterial | None = None
) -> bytes:
    """The member list as one of ``peer_urls`` knows it (for a member joining a cluster)."""
    request = pb.MembersRequest(cluster_id=cluster_id)
    resp = await _first_answer(peer_urls, tls, lambda stub: stub.Members(request, timeout=timeout))
    return bytes(resp.members)


async def _first_answer(
    peer_urls: list[str],
    tls: TlsMaterial | None,
    call: Callable[[pb_grpc.RaftPeerStub], Awaitable[Any]],
) -> Any:
    """One call on a channel of its own, to each URL in turn until one answers (for a member
    that has no transport running yet). Raises ConnectionError naming every URL's failure."""
    errors = []
    credentials = tls.channel_credentials() if tls else None
    for url in peer_urls:
        try:
            async with open_channel(grpc_target(url), credentials) as channel:
                return await call(pb_grpc.RaftPeerStub(channel))
        except grpc.aio.AioRpcError as err:
            errors.append(f"{url}: {err.details() or err.code().name}")
    raise ConnectionError("no peer answered: " + "; ".join(errors))


async def _made_in_thread(items: Iterator[T]) -> AsyncIterator[T]:
    """The items of ``items``, each made in a worker thread: a streamed snapshot's chunks
    are read from the store and serialized as they are sent, never on the loop."""
    end = object()
    while (item := await asyncio.to_thread(next, items, end)) is not end:
        yield cast(T, item)
