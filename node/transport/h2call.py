"""One client-streaming gRPC call on an HTTP/2 connection of its own, on the event loop.

The peer stream (``stream.PeerStream``) writes every batch a member sends to a peer into one
long call of ``RaftPeer/Send``. Through grpcio, each write crossed to grpcio's poller thread
and back (an eventfd write and a wake-up on each side); here a write is one ``send`` on the
loop's own socket. The wire is plain gRPC over HTTP/2, so the peer may be a member of any
version, serving with grpcio or with ``flotilla.node.api.h2grpc``.

The connection carries nothing but this call. It pings the peer while idle, as the grpcio
channel did, so that a peer gone silent (a partition, no RST) fails the call within
``ping_timeout`` instead of swallowing writes forever.
"""

from __future__ import annotations

import asyncio
import ssl
import struct
from collections.abc import Callable, Sequence
from urllib.parse import unquote

import grpc
import hpack

from flotilla.node.api.h2grpc import (
    ACK,
    CONTINUATION,
    DATA,
    DEFAULT_FRAME,
    DEFAULT_WINDOW,
    END_HEADERS,
    END_STREAM,
    GOAWAY,
    HEADERS,
    PADDED,
    PING,
    PREFACE,
    PRIORITY_FLAG,
    RST_STREAM,
    S_INITIAL_WINDOW_SIZE,
    S_MAX_FRAME_SIZE,
    SETTINGS,
    WINDOW_UPDATE,
    frame,
    hpack_string,
    literal,
)

_FRAME_HEAD = struct.Struct(">HBBBI")  # as h2grpc reads frames
STREAM = 1
RECV_WINDOW = 1 << 20
MAX_FRAME_IN = 1 << 20


class CallError(ConnectionError):
    """The call ended: the peer's status, or what broke the connection."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details


def _literal_indexed_name(index: int, value: bytes) -> bytes:
    """A literal field, never indexed, whose name is static-table entry ``index`` (< 15)."""
    return bytes([index]) + hpack_string(value)


def request_headers(
    authority: str, path: str, secure: bool, metadata: Sequence[tuple[str, str]]
) -> bytes:
    """The call's header block, all from the static table or literal: nothing indexed."""
    block = b"\x83" + (b"\x87" if secure else b"\x86")  # :method POST, :scheme
    block += _literal_indexed_name(4, path.encode())  # :path
    block += _literal_indexed_name(1, authority.encode())  # :authority
    block += b"\x0f\x10" + hpack_string(b"application/grpc")  # content-type (static name 31)
    block += literal(b"te", b"trailers")
    for name, value in metadata:
        block += literal(name.encode(), value.encode())
    return block


class StreamingCall(asyncio.Protocol):
    """Call :meth:`open`, then :meth:`write` request messages; the call ends with an error."""

    def __init__(self, headers: bytes, ping_interval: float, ping_timeout: float) -> None:
        self.loop = asyncio.get_running_loop()
        self._headers = headers
        self._ping_interval = ping_interval
        self._ping_timeout = ping_timeout
        self._transport: asyncio.Transport | None = None
        self._buf = b""
        self._decoder = hpack.Decoder()
        self._block: bytearray | None = None
        self._block_ends = False
        self._heard = self.loop.time()
        self._conn_window = DEFAULT_WINDOW
        self._stream_window = DEFAULT_WINDOW
        self._initial_window = DEFAULT_WINDOW
        self._max_frame = DEFAULT_FRAME
        self._recv_unacked = 0
        self._room: asyncio.Future[None] | None = None
        self._paused = False
        self._status: dict[bytes, bytes] = {}
        self._error: CallError | None = None
        self._done_callbacks: list[Callable[[StreamingCall], None]] = []
        self._pinger: asyncio.TimerHandle | None = None
        self._ping_deadline: asyncio.TimerHandle | None = None

    @classmethod
    async def open(
        cls,
        target: str,
        path: str,
        metadata: Sequence[tuple[str, str]] = (),
        tls: ssl.SSLContext | None = None,
        *,
        connect_timeout: float = 5.0,
        ping_interval: float = 10.0,
        ping_timeout: float = 5.0,
    ) -> StreamingCall:
        host, _, port = target.rpartition(":")
        host = host.strip("[]")
        headers = request_headers(target, path, tls is not None, metadata)
        loop = asyncio.get_running_loop()
        _, call = await asyncio.wait_for(
            loop.create_connection(
                lambda: cls(headers, ping_interval, ping_timeout),
                host,
                int(port),
                ssl=tls,
                server_hostname=host if tls is not None else None,
            ),
            connect_timeout,
        )
        return call

    # The call, as PeerStream uses it (the subset of grpc.aio's StreamUnaryCall).
    def done(self) -> bool:
        return self._error is not None

    def add_done_callback(self, callback: Callable[[StreamingCall], None]) -> None:
        if self._error is not None:
            callback(self)
        else:
            self._done_callbacks.append(callback)

    def exception(self) -> CallError | None:
        return self._error

    def cancel(self) -> None:
        if self._error is None:
            self._write(frame(RST_STREAM, 0, STREAM, struct.pack(">I", 0x8)))  # CANCEL
            self._end(CallError(grpc.StatusCode.CANCELLED, "cancelled"))
        self._close()  # the connection was the call's alone

    async def write(self, payload: bytes) -> None:
        """Send one request message; returns once the socket has taken it."""
        view = memoryview(struct.pack(">BI", 0, len(payload)) + payload)
        while view:
            if self._error is not None:
                raise self._error
            room = min(self._conn_window, self._stream_window)
            if room <= 0 or self._paused:
                self._room = self.loop.create_future()
                await self._room
                continue
            n = min(len(view), room, self._max_frame)
            self._write(frame(DATA, 0, STREAM, bytes(view[:n])))
            self._conn_window -= n
            self._stream_window -= n
            view = view[n:]
        if self._error is not None:
            raise self._error

    # asyncio.Protocol.
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass
        settings = struct.pack(">HI", S_INITIAL_WINDOW_SIZE, RECV_WINDOW)
        self._write(
            PREFACE
            + frame(SETTINGS, 0, 0, settings)
            + frame(HEADERS, END_HEADERS, STREAM, self._headers)
        )
        self._schedule_ping()

    def connection_lost(self, exc: Exception | None) -> None:
        self._end(CallError(grpc.StatusCode.UNAVAILABLE, f"connection lost: {exc or 'closed'}"))

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        self._wake()

    def data_received(self, data: bytes) -> None:
        buf = self._buf + data if self._buf else data
        pos = 0
        end = len(buf)
        while end - pos >= 9 and self._error is None:
            hi, lo, kind, flags, sid = _FRAME_HEAD.unpack_from(buf, pos)
            length = (hi << 8) | lo
            if length > MAX_FRAME_IN:
                self._fail("frame too large")
                return
            if end - pos - 9 < length:
                break
            payload = buf[pos + 9 : pos + 9 + length]
            pos += 9 + length
            try:
                self._frame_in(kind, flags, sid & 0x7FFFFFFF, payload)
            except Exception as exc:  # a malformed answer fails this call, nothing else
                self._fail(f"bad frame from peer: {exc!r}")
                return
        self._buf = buf[pos:]
        self._heard = self.loop.time()  # anything heard proves the peer alive

    # Frames in.
    def _frame_in(self, kind: int, flags: int, sid: int, p: bytes) -> None:
        if kind == SETTINGS:
            if not flags & ACK:
                for i in range(0, len(p) - len(p) % 6, 6):
                    ident, value = struct.unpack_from(">HI", p, i)
                    if ident == S_INITIAL_WINDOW_SIZE:
                        self._stream_window += value - self._initial_window
                        self._initial_window = value
                    elif ident == S_MAX_FRAME_SIZE:
                        self._max_frame = value
                self._write(frame(SETTINGS, ACK, 0))
                self._wake()
        elif kind == WINDOW_UPDATE:
            inc = struct.unpack(">I", p)[0] & 0x7FFFFFFF
            if sid == 0:
                self._conn_window += inc
            elif sid == STREAM:
                self._stream_window += inc
            self._wake()
        elif kind == PING:
            if flags & ACK:
                if self._ping_deadline is not None:
                    self._ping_deadline.cancel()
                    self._ping_deadline = None
            else:
                self._write(frame(PING, ACK, 0, p))
        elif kind == DATA:
            # The call's one answer (an empty message): only its room is given back.
            self._recv_unacked += len(p)
            if self._recv_unacked >= RECV_WINDOW // 2:
                credit = struct.pack(">I", self._recv_unacked)
                self._write(frame(WINDOW_UPDATE, 0, 0, credit))
                self._write(frame(WINDOW_UPDATE, 0, STREAM, credit))
                self._recv_unacked = 0
        elif kind in (HEADERS, CONTINUATION):
            if kind == HEADERS:
                if flags & PADDED:
                    p = p[1 : len(p) - p[0]]
                if flags & PRIORITY_FLAG:
                    p = p[5:]
                self._block = bytearray(p)
                self._block_ends = bool(flags & END_STREAM)
            elif self._block is not None:
                self._block += p
            if flags & END_HEADERS and self._block is not None:
                fields = self._decoder.decode(bytes(self._block), raw=True)
                self._block = None
                self._status.update(fields)
                if self._block_ends or b"grpc-status" in self._status:
                    self._finished()
        elif kind == RST_STREAM and sid == STREAM:
            code = struct.unpack(">I", p)[0]
            self._fail(f"stream reset by peer (error {code})")
        elif kind == GOAWAY:
            code = struct.unpack_from(">I", p, 4)[0]
            detail = p[8:].decode(errors="replace")
            self._fail(f"peer going away (error {code}{', ' + detail if detail else ''})")

    def _finished(self) -> None:
        raw = self._status.get(b"grpc-status", b"2").decode()
        code = next((c for c in grpc.StatusCode if str(c.value[0]) == raw), grpc.StatusCode.UNKNOWN)
        details = self._status.get(b"grpc-message", b"").decode(errors="replace")
        if code == grpc.StatusCode.OK:
            details = details or "peer ended the stream"
        self._end(CallError(code, unquote(details)))
        self._close()

    # Output, keepalive, the end.
    def _write(self, data: bytes) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)

    def _wake(self) -> None:
        if self._room is not None and not self._room.done():
            self._room.set_result(None)

    def _schedule_ping(self) -> None:
        self._pinger = self.loop.call_later(self._ping_interval, self._ping)

    def _ping(self) -> None:
        quiet = self.loop.time() - self._heard
        if quiet < self._ping_interval:
            self._pinger = self.loop.call_later(self._ping_interval - quiet, self._ping)
            return
        self._write(frame(PING, 0, 0, b"flotilla"))
        if self._ping_deadline is None:
            self._ping_deadline = self.loop.call_later(
                self._ping_timeout, self._fail, "peer did not answer a ping"
            )
        self._pinger = self.loop.call_later(self._ping_interval, self._ping)

    def _fail(self, reason: str) -> None:
        self._end(CallError(grpc.StatusCode.UNAVAILABLE, reason))
        self._close()

    def _close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def _end(self, error: CallError) -> None:
        if self._error is not None:
            return
        self._error = error
        for handle in (self._pinger, self._ping_deadline):
            if handle is not None:
                handle.cancel()
        self._wake()
        callbacks, self._done_callbacks = self._done_callbacks, []
        for callback in callbacks:
            callback(self)
