"""The peer stream's HTTP/2 call against both servers a peer may run, and a silent peer."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from tests.node.certs import CertAuthority

from flotilla.node.api import h2grpc
from flotilla.node.tls import TlsFiles, load
from flotilla.node.transport.h2call import CallError, StreamingCall

T = 15.0


class Sink:
    """A client-streaming method that keeps what it reads; it fails on b"fail"."""

    def __init__(self) -> None:
        self.got: list[bytes] = []
        self.metadata: dict[str, str] = {}
        self.arrived = asyncio.Event()

    async def send(self, requests: AsyncIterator[bytes], context: Any) -> bytes:
        self.metadata = dict(context.invocation_metadata())
        async for r in requests:
            if r == b"fail":
                await context.abort(grpc.StatusCode.DATA_LOSS, "bad batch: 100%")
            self.got.append(r)
            self.arrived.set()
        return b""


async def serve(sink: Sink, kind: str, tls: Any = None) -> tuple[Any, str]:
    server: Any = h2grpc.Server() if kind == "h2grpc" else grpc.aio.server()
    handlers = {"Send": grpc.stream_unary_rpc_method_handler(sink.send)}
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("t.P", handlers),))
    if tls is None:
        port = server.add_insecure_port("127.0.0.1:0")
    else:
        port = server.add_secure_port("localhost:0", tls)
    await server.start()
    return server, f"{'localhost' if tls else '127.0.0.1'}:{port}"


async def wait_for(check: Callable[[], bool], what: str) -> None:
    async def poll() -> None:
        while not check():
            await asyncio.sleep(0.01)

    try:
        await asyncio.wait_for(poll(), T)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(scenario(), 60))


@pytest.mark.parametrize("kind", ["h2grpc", "grpcio"])
def test_messages_arrive_in_order_and_the_peers_status_ends_the_call(kind: str) -> None:
    async def scenario() -> None:
        sink = Sink()
        server, target = await serve(sink, kind)
        call = await StreamingCall.open(target, "/t.P/Send", [("flotilla-reply-urls", "u1,u2")])
        sent = [bytes([i % 256]) * (i * 997 % 300_000) for i in range(60)]  # ~9 MB
        for m in sent:
            await call.write(m)
        await wait_for(lambda: len(sink.got) == len(sent), "every message")
        assert sink.got == sent
        assert sink.metadata["flotilla-reply-urls"] == "u1,u2"
        ended = asyncio.Event()
        call.add_done_callback(lambda _: ended.set())
        await call.write(b"fail")
        await asyncio.wait_for(ended.wait(), T)
        err = call.exception()
        assert isinstance(err, CallError)
        assert err.code == grpc.StatusCode.DATA_LOSS
        assert err.details == "bad batch: 100%"
        with pytest.raises(CallError):
            await call.write(b"after the end")
        await server.stop(0)

    run(scenario)


def test_a_peer_that_stops_answering_fails_the_call_by_its_pings() -> None:
    async def scenario() -> None:
        silent: list[asyncio.StreamWriter] = []

        async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            silent.append(writer)  # reads nothing, answers nothing, never closes

        server = await asyncio.start_server(accept, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        call = await StreamingCall.open(
            f"127.0.0.1:{port}", "/t.P/Send", ping_interval=0.2, ping_timeout=0.3
        )
        ended = asyncio.Event()
        call.add_done_callback(lambda _: ended.set())
        await asyncio.wait_for(ended.wait(), 5)
        err = call.exception()
        assert err is not None and "ping" in err.details
        server.close()

    run(scenario)


def test_a_closed_peer_fails_the_call_and_a_refused_one_fails_to_open() -> None:
    async def scenario() -> None:
        sink = Sink()
        server, target = await serve(sink, "h2grpc")
        call = await StreamingCall.open(target, "/t.P/Send")
        await call.write(b"one")
        await wait_for(lambda: sink.got == [b"one"], "the first message")
        ended = asyncio.Event()
        call.add_done_callback(lambda _: ended.set())
        await server.stop(0)
        await asyncio.wait_for(ended.wait(), T)
        assert call.exception() is not None
        with pytest.raises(OSError):
            await StreamingCall.open(target, "/t.P/Send")

    run(scenario)


def test_over_tls_with_a_client_certificate(tmp_path: Path) -> None:
    ca = CertAuthority.create(tmp_path, "ca")
    server_pair, client_pair = ca.issue("server"), ca.issue("client")
    server_side = load(TlsFiles(server_pair.cert, server_pair.key, ca.cert_file, True), "")
    client_side = load(TlsFiles(client_pair.cert, client_pair.key, ca.cert_file), "")
    assert server_side is not None and client_side is not None

    async def scenario() -> None:
        sink = Sink()
        server, target = await serve(sink, "h2grpc", tls=server_side.server_context())
        call = await StreamingCall.open(target, "/t.P/Send", tls=client_side.client_context())
        await call.write(b"secret")
        await wait_for(lambda: sink.got == [b"secret"], "the message over TLS")
        call.cancel()
        await server.stop(0)

    run(scenario)
