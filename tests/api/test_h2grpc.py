"""The client-facing gRPC server against grpcio's own client, and against raw bytes.

Methods here take and return raw bytes (no serializers), so each test is about the wire:
flow control both ways, streaming and back-pressure, status codes and their messages,
deadlines, cancellation, limits, TLS, graceful stop, and a client that speaks no HTTP/2.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import hpack
import pytest
from tests.node.certs import CertAuthority

from flotilla.node.api import h2grpc
from flotilla.node.tls import TlsFiles, load

T = 15.0  # bound on every wait below


class Recorder:
    """Handlers for the service ``t.T``, recording what the server did with them."""

    def __init__(self) -> None:
        self.cancelled: asyncio.Event | None = None
        self.yielded = 0

    async def echo(self, request: bytes, context: Any) -> bytes:
        return request

    async def fail(self, request: bytes, context: Any) -> bytes:
        await context.abort(grpc.StatusCode.FAILED_PRECONDITION, request.decode())
        raise AssertionError("abort returned")

    def sync_unimplemented(self, request: bytes, context: Any) -> bytes:
        # What the generated base servicers do for a method a service leaves out.
        context.set_code(grpc.StatusCode.UNIMPLEMENTED)
        context.set_details("Method not implemented!")
        raise NotImplementedError("Method not implemented!")

    async def hang(self, request: bytes, context: Any) -> bytes:
        assert self.cancelled is not None
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        return b""

    async def chat(self, requests: AsyncIterator[bytes], context: Any) -> AsyncIterator[bytes]:
        async for r in requests:
            yield r

    async def total(self, requests: AsyncIterator[bytes], context: Any) -> bytes:
        n = 0
        async for r in requests:
            n += len(r)
        return str(n).encode()

    async def flood(self, request: bytes, context: Any) -> AsyncIterator[bytes]:
        size = int(request.decode())
        while True:
            self.yielded += 1
            yield b"x" * size


def handlers(rec: Recorder) -> dict[str, grpc.RpcMethodHandler]:
    return {
        "Echo": grpc.unary_unary_rpc_method_handler(rec.echo),
        "Fail": grpc.unary_unary_rpc_method_handler(rec.fail),
        "Missing": grpc.unary_unary_rpc_method_handler(rec.sync_unimplemented),
        "Hang": grpc.unary_unary_rpc_method_handler(rec.hang),
        "Chat": grpc.stream_stream_rpc_method_handler(rec.chat),
        "Total": grpc.stream_unary_rpc_method_handler(rec.total),
        "Flood": grpc.unary_stream_rpc_method_handler(rec.flood),
    }


class Counting(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    def __init__(self) -> None:
        self.methods: list[str] = []

    async def intercept_service(
        self, continuation: Callable[[Any], Awaitable[Any]], details: Any
    ) -> Any:
        self.methods.append(details.method)
        return await continuation(details)


async def serve(rec: Recorder, tls: Any = None, **kw: Any) -> tuple[h2grpc.Server, str]:
    server = h2grpc.Server(**kw)
    hs = handlers(rec)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("t.T", hs),))
    server.add_registered_method_handlers("t.T", hs)
    port = (
        server.add_secure_port("127.0.0.1:0", tls)
        if tls is not None
        else server.add_insecure_port("127.0.0.1:0")
    )
    await server.start()
    return server, f"127.0.0.1:{port}"


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(scenario(), 60))


def test_unary_calls_answer_with_the_handlers_result_and_status() -> None:
    async def scenario() -> None:
        rec = Recorder()
        counting = Counting()
        server, target = await serve(rec, interceptors=[counting])
        async with grpc.aio.insecure_channel(target) as ch:
            echo = ch.unary_unary("/t.T/Echo")
            answers = await asyncio.gather(*(echo(b"m%d" % i, timeout=T) for i in range(200)))
            assert answers == [b"m%d" % i for i in range(200)]
            assert await echo(b"", timeout=T) == b""

            with pytest.raises(grpc.aio.AioRpcError) as err:
                await ch.unary_unary("/t.T/Fail")("wrong 100% — ünïcode".encode(), timeout=T)
            assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert err.value.details() == "wrong 100% — ünïcode"

            with pytest.raises(grpc.aio.AioRpcError) as err:
                await ch.unary_unary("/t.T/Missing")(b"", timeout=T)
            assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
            assert err.value.details() == "Method not implemented!"

            with pytest.raises(grpc.aio.AioRpcError) as err:
                await ch.unary_unary("/t.T/Nope")(b"", timeout=T)
            assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
            assert "Nope" in (err.value.details() or "")
        # Interceptors see each method once: their handler is kept for later calls.
        assert counting.methods.count("/t.T/Echo") == 1
        await server.stop(1)

    run(scenario)


def test_large_messages_cross_flow_control_windows_both_ways() -> None:
    async def scenario() -> None:
        server, target = await serve(
            Recorder(), options=[("grpc.max_receive_message_length", 8 << 20)]
        )
        options = [
            ("grpc.max_receive_message_length", 64 << 20),
            ("grpc.max_send_message_length", 64 << 20),
        ]
        async with grpc.aio.insecure_channel(target, options=options) as ch:
            big = bytes(range(256)) * (6 * 4096)  # 6 MiB: beyond every window either side
            assert await ch.unary_unary("/t.T/Echo")(big, timeout=T) == big
            # Many messages on one stream: the request window must be handed back as read.
            chunks = [bytes([i]) * 300_000 for i in range(40)]  # 12 MB in all

            async def gen() -> AsyncIterator[bytes]:
                for c in chunks:
                    yield c

            got = [m async for m in ch.stream_stream("/t.T/Chat")(gen(), timeout=T)]
            assert got == chunks
            total = await ch.stream_unary("/t.T/Total")(gen(), timeout=T)
            assert total == str(sum(map(len, chunks))).encode()
        await server.stop(1)

    run(scenario)


def test_a_request_above_the_limit_is_refused_as_grpc_does() -> None:
    async def scenario() -> None:
        server, target = await serve(
            Recorder(), options=[("grpc.max_receive_message_length", 1000)]
        )
        async with grpc.aio.insecure_channel(target) as ch:
            echo = ch.unary_unary("/t.T/Echo")
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await echo(b"x" * 1001, timeout=T)
            assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "larger than max (1001 vs. 1000)" in (err.value.details() or "")
            assert await echo(b"x" * 1000, timeout=T) == b"x" * 1000  # the connection lives
        await server.stop(1)

    run(scenario)


def test_a_slow_reader_holds_a_streaming_handler_back() -> None:
    async def scenario() -> None:
        rec = Recorder()
        server, target = await serve(rec)
        async with grpc.aio.insecure_channel(target) as ch:
            call = ch.unary_stream("/t.T/Flood")(b"100000", timeout=T)
            first = await call.read()
            assert first == b"x" * 100_000
            await asyncio.sleep(0.5)  # give an unbounded producer time to run away
            ahead = rec.yielded
            await asyncio.sleep(0.5)
            # It filled the client's windows and our transport's buffer, then waited.
            assert rec.yielded == ahead, f"the handler runs ahead: {ahead}, {rec.yielded}"
            assert ahead < 400, f"the handler ran {ahead} messages ahead"
            for _ in range(300):
                assert await call.read() == b"x" * 100_000
            call.cancel()
        await server.stop(1)

    run(scenario)


def test_deadlines_and_cancellations_stop_the_handler() -> None:
    async def scenario() -> None:
        rec = Recorder()
        server, target = await serve(rec)
        async with grpc.aio.insecure_channel(target) as ch:
            hang = ch.unary_unary("/t.T/Hang")
            rec.cancelled = asyncio.Event()
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await hang(b"", timeout=0.3)
            assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            await asyncio.wait_for(rec.cancelled.wait(), T)

            rec.cancelled = asyncio.Event()
            call = hang(b"", timeout=T)
            await asyncio.sleep(0.2)
            call.cancel()
            await asyncio.wait_for(rec.cancelled.wait(), T)
            assert await ch.unary_unary("/t.T/Echo")(b"still", timeout=T) == b"still"
        await server.stop(1)

    run(scenario)


def test_stop_lets_running_calls_finish_then_cancels_the_rest() -> None:
    async def scenario() -> None:
        rec = Recorder()
        rec.cancelled = asyncio.Event()
        server, target = await serve(rec)
        async with grpc.aio.insecure_channel(target) as ch:
            call = ch.unary_unary("/t.T/Hang")(b"", timeout=T)
            await asyncio.sleep(0.2)
            await server.stop(0.2)
            await asyncio.wait_for(rec.cancelled.wait(), T)
            with pytest.raises(grpc.aio.AioRpcError):
                await call
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await ch.unary_unary("/t.T/Echo")(b"", timeout=2)
            assert err.value.code() in (
                grpc.StatusCode.UNAVAILABLE,
                grpc.StatusCode.DEADLINE_EXCEEDED,
            )

    run(scenario)


def test_tls_with_client_certificates(tmp_path: Path) -> None:
    ca = CertAuthority.create(tmp_path, "ca")
    server_pair, client_pair = ca.issue("server"), ca.issue("client")
    server_side = load(
        TlsFiles(server_pair.cert, server_pair.key, ca.cert_file, client_cert_auth=True), ""
    )
    client_side = load(TlsFiles(client_pair.cert, client_pair.key, ca.cert_file), "")

    async def scenario() -> None:
        server, target = await serve(Recorder(), tls=server_side.server_context())
        target = target.replace("127.0.0.1", "localhost")
        async with grpc.aio.secure_channel(target, client_side.channel_credentials()) as ch:
            assert await ch.unary_unary("/t.T/Echo")(b"secret", timeout=T) == b"secret"
        anonymous = grpc.ssl_channel_credentials(root_certificates=ca.cert_file.read_bytes())
        async with grpc.aio.secure_channel(target, anonymous) as ch:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await ch.unary_unary("/t.T/Echo")(b"secret", timeout=5)
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        await server.stop(1)

    run(scenario)


def test_a_client_that_speaks_no_http2_loses_only_its_connection() -> None:
    async def scenario() -> None:
        server, target = await serve(Recorder())
        host, port = target.split(":")
        loop = asyncio.get_running_loop()

        def garbage(data: bytes) -> bytes:
            with socket.create_connection((host, int(port)), timeout=T) as s:
                s.sendall(data)
                s.shutdown(socket.SHUT_WR)
                out = b""
                while chunk := s.recv(65536):
                    out += chunk
                return out

        out = await loop.run_in_executor(None, garbage, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        # The server's SETTINGS, then GOAWAY (type 7) with PROTOCOL_ERROR, then the close.
        kinds = _frame_kinds(out)
        assert kinds[-1][0] == h2grpc.GOAWAY and kinds[-1][1][4:8] == struct.pack(">I", 1)
        # A frame larger than the size we allow: FRAME_SIZE_ERROR.
        huge = h2grpc.PREFACE + struct.pack(">HBBBI", 0x100, 0, h2grpc.DATA, 0, 1)  # 64 KiB
        out = await loop.run_in_executor(None, garbage, huge)
        kinds = _frame_kinds(out)
        assert kinds[-1][0] == h2grpc.GOAWAY and kinds[-1][1][4:8] == struct.pack(">I", 6)
        async with grpc.aio.insecure_channel(target) as ch:
            assert await ch.unary_unary("/t.T/Echo")(b"fine", timeout=T) == b"fine"
        await server.stop(1)

    run(scenario)


def _frame_kinds(data: bytes) -> list[tuple[int, bytes]]:
    frames = []
    pos = 0
    while len(data) - pos >= 9:
        hi, lo, kind, _, _ = struct.unpack_from(">HBBBI", data, pos)
        n = (hi << 8) | lo
        frames.append((kind, data[pos + 9 : pos + 9 + n]))
        pos += 9 + n
    return frames


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("100m", 0.1), ("5S", 5.0), ("2M", 120.0), ("1H", 3600.0), ("250u", 250e-6), ("7n", 7e-9)],
)
def test_grpc_timeouts_parse(value: str, seconds: float) -> None:
    assert h2grpc.parse_timeout(value) == pytest.approx(seconds)


@pytest.mark.parametrize("value", ["", "5", "S", "1x", "-1S", "1234567890S"])
def test_malformed_grpc_timeouts_are_ignored(value: str) -> None:
    assert h2grpc.parse_timeout(value) is None


def test_cached_header_blocks_follow_the_hpack_table() -> None:
    async def scenario() -> None:
        conn = h2grpc.Connection(h2grpc.Server())
        enc = hpack.Encoder()
        first = enc.encode([(":path", "/a/A"), ("x-k", "1")])  # adds both to the table
        again = enc.encode([(":path", "/a/A"), ("x-k", "1")])  # two indexes, nothing added
        assert conn._decode(first) == ("/a/A", (("x-k", "1"),), None)
        assert conn._decode(again) == ("/a/A", (("x-k", "1"),), None)
        assert again in conn.header_cache
        # New entries shift the dynamic table: the same bytes now name the newer pair.
        conn._decode(enc.encode([(":path", "/b/B"), ("x-k", "2")]))
        assert conn._decode(again) == ("/b/B", (("x-k", "2"),), None)

    run(scenario)
