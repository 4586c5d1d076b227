"""PeerStream: everything one member sends to one peer, over one long-lived gRPC stream.

Messages wait in a bounded queue; one task drains it, writing everything queued as one
sealed ``MessageBatch`` (checksummed, see ``codec.seal``) per wake-up, so a driver turn that
produces many messages for a peer costs one gRPC write. While a write is in flight new
messages gather for the next batch: the slower the link, the bigger the batches.

Nothing is buffered without bound. When the queue is full, new messages are dropped and the
peer is reported unreachable: Raft retransmits what matters, and the leader switches that
follower to probing rather than streaming into a void. When the stream breaks, the queue is
dropped the same way and the task reconnects with exponential backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections import deque
from typing import Any, NoReturn

import grpc

from flotilla.node.raft.types import ENTRY_OVERHEAD, Message
from flotilla.node.transport import h2call
from flotilla.node.transport.codec import seal
from flotilla.node.transport.pb import raftpeer_pb2 as pb
from flotilla.node.transport.pb import raftpeer_pb2_grpc as pb_grpc
from flotilla.node.transport.reports import Reports

log = logging.getLogger(__name__)

MESSAGE_OVERHEAD = 64
"""Bytes a queued message is counted for besides its entries."""

CHANNEL_OPTIONS: list[tuple[str, Any]] = [
    # gRPC's own reconnect backoff defaults to 1 s .. 120 s; match ours instead. Half a
    # second at most: a member that comes back (a restarted pod) must be reachable from every
    # peer well within an election timeout, or a leadership move onto a link still backing
    # off stalls commits for that long.
    ("grpc.initial_reconnect_backoff_ms", 50),
    ("grpc.min_reconnect_backoff_ms", 50),
    ("grpc.max_reconnect_backoff_ms", 500),
    # A peer that comes back at a new address (a recreated pod keeps its name, not its IP)
    # is found at once: gRPC re-resolves a failing target at most every 30 s by default, and
    # for that long a member would keep dialling the old address.
    ("grpc.dns_min_time_between_resolutions_ms", 500),
    ("grpc.max_send_message_length", -1),
    ("grpc.max_receive_message_length", -1),
    # Notice a silently dead peer (partition, no RST) instead of writing into it forever.
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
]


def open_channel(
    target: str,
    credentials: grpc.ChannelCredentials | None,
    options: list[tuple[str, Any]] | None = None,
) -> grpc.aio.Channel:
    """A channel to a peer: TLS when the member has peer credentials, plain otherwise."""
    if credentials is None:
        return grpc.aio.insecure_channel(target, options=options)
    return grpc.aio.secure_channel(target, credentials, options=options)


SEND_PATH = f"/{pb.DESCRIPTOR.services_by_name['RaftPeer'].full_name}/Send"

REPLY_URLS = "flotilla-reply-urls"
"""Call metadata of every stream: the sender's peer URLs, so that a receiver that does not
know the sender yet can still answer it (see ``Transport.note_sender``)."""

BACKOFF = (0.05, 0.5)
"""Seconds between reconnects: doubling from the first to the second. A peer that comes
back (a restart, a learner started after MemberAdd) is heard within half a second; etcd's
stream reader redials every 100 ms. A refused connection costs next to nothing."""


class PeerStream:
    def __init__(
        self,
        member_id: int,
        urls: list[str],
        cluster_id: int,
        from_id: int,
        reports: Reports,
        *,
        max_messages: int = 4096,
        max_bytes: int = 32 << 20,
        max_batch_bytes: int = 4 << 20,
        backoff: tuple[float, float] = BACKOFF,
        credentials: grpc.ChannelCredentials | None = None,
        tls: ssl.SSLContext | None = None,
        reply_urls: list[str] | None = None,
    ) -> None:
        if not urls:
            raise ValueError(f"member {member_id:x} has no peer URL")
        self.member_id = member_id
        self.urls = urls
        self._cluster_id = cluster_id
        self._from_id = from_id
        self._reports = reports
        self._max_messages = max_messages
        self._max_bytes = max_bytes
        self._max_batch_bytes = max_batch_bytes
        self._backoff = backoff
        self._credentials = credentials
        self._tls = tls
        self._metadata = ((REPLY_URLS, ",".join(reply_urls)),) if reply_urls else ()
        self._queue: deque[tuple[Message, int]] = deque()
        self._queued_bytes = 0
        self._wake = asyncio.Event()
        self._url_index = 0
        self.channel = open_channel(urls[0], credentials, CHANNEL_OPTIONS)
        self.stub = pb_grpc.RaftPeerStub(self.channel)
        self._task = asyncio.get_running_loop().create_task(self._run())
        self.dropped = 0
        """Messages dropped so far (queue full or stream broken); for metrics and tests."""
        self.sent_bytes = 0
        """Bytes handed to the stream so far, as estimated when queued; for metrics."""
        self.connected = False

    @property
    def queued(self) -> int:
        return len(self._queue)

    def enqueue(self, m: Message) -> None:
        size = MESSAGE_OVERHEAD
        if m.entries:
            size += sum([len(e.data) for e in m.entries]) + ENTRY_OVERHEAD * len(m.entries)
        q = self._queue
        if q and (len(q) >= self._max_messages or self._queued_bytes + size > self._max_bytes):
            self.dropped += 1
            self._reports.unreachable(self.member_id)
            return
        q.append((m, size))
        self._queued_bytes += size
        self._wake.set()

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        await self.channel.close()

    def _take_batch(self) -> pb.MessageBatch:
        q = self._queue
        if self._queued_bytes <= self._max_batch_bytes:
            self.sent_bytes += self._queued_bytes
            taken = [m for m, _ in q]
            q.clear()
            self._queued_bytes = 0
            return seal(self._cluster_id, self._from_id, taken)
        taken = []
        size = 0
        while q and (size == 0 or size + q[0][1] <= self._max_batch_bytes):
            m, n = q.popleft()
            taken.append(m)
            size += n
        self._queued_bytes -= size
        self.sent_bytes += size
        return seal(self._cluster_id, self._from_id, taken)

    def _drop_queue(self) -> None:
        if self._queue:
            self.dropped += len(self._queue)
            self._queue.clear()
            self._queued_bytes = 0
        self._reports.unreachable(self.member_id)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        delay = self._backoff[0]
        failures = 0
        while True:
            started = loop.time()
            error: Exception
            try:
                await self._stream()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                error = exc
            if self.connected and loop.time() - started >= self._backoff[1]:
                # It worked for a while: this is a new failure, not the same one again.
                delay = self._backoff[0]
                failures = 0
            log.log(
                logging.WARNING if failures == 0 else logging.DEBUG,
                "stream to member %x at %s broke: %s",
                self.member_id,
                self.urls[self._url_index],
                describe_error(error),
            )
            reached, self.connected = self.connected, False
            failures += 1
            self._drop_queue()
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._backoff[1])
            if not reached or len(self.urls) > 1:
                await self._reopen()

    async def _reopen(self) -> None:
        """A new channel, to the next URL if there are several.

        A channel that could not reach its peer is replaced rather than retried: gRPC backs
        off failed name resolutions on its own, from 1 s up to 2 minutes and regardless of
        the channel options, and a peer that does not exist yet (the pod of a learner just
        added, a recreated pod) has no DNS record. A new channel resolves the name at once.
        """
        await self.channel.close()
        self._url_index = (self._url_index + 1) % len(self.urls)
        self.channel = open_channel(self.urls[self._url_index], self._credentials, CHANNEL_OPTIONS)
        self.stub = pb_grpc.RaftPeerStub(self.channel)

    async def _stream(self) -> NoReturn:
        """Write batches until the stream breaks: this never returns, it raises.

        The stream is an HTTP/2 connection of its own (``h2call``), not a call on the
        channel: its writes then stay on the event loop. The channel carries the rarer calls
        (snapshots, forwarded keep-alives, hashes)."""
        call = await h2call.StreamingCall.open(
            self.urls[self._url_index], SEND_PATH, self._metadata, self._tls
        )
        wake = self._wake
        call.add_done_callback(lambda _: wake.set())
        try:
            while True:
                if not self._queue:
                    await wake.wait()
                    wake.clear()
                if call.done():
                    raise call.exception() or ConnectionError("peer ended the stream")
                if self._queue:
                    await call.write(self._take_batch().SerializeToString())
                    self.connected = True
        finally:
            call.cancel()


def describe_error(exc: BaseException) -> str:
    """A gRPC error as its status and details, on one line; anything else as itself."""
    if isinstance(exc, grpc.aio.AioRpcError):
        return f"{exc.code().name}: {exc.details()}"
    if isinstance(exc, h2call.CallError):
        return str(exc)
    return repr(exc)
