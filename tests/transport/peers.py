"""Helpers for transport tests: members with real gRPC servers on loopback ports."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from flotilla.node.raft.types import Message, MessageType, SnapshotMeta
from flotilla.node.transport.peer import Transport
from flotilla.node.transport.snapshot import Streamed

CLUSTER = 0xC1


_running: list[Member] = []


def run(coro: Coroutine[Any, Any, None], timeout: float = 60.0) -> None:
    """Run a test body; members it started are stopped even if it fails."""

    async def main() -> None:
        try:
            await asyncio.wait_for(coro, timeout)
        finally:
            while _running:
                await _running[-1].stop()

    asyncio.run(main())


def free_port() -> int:
    """A loopback port nobody listens on (closed right away: a peer that is down)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def eventually(check: Callable[[], bool], timeout: float = 10.0, what: str = "") -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what or check}")
        await asyncio.sleep(0.01)


class Member:
    """A Transport plus everything delivered to it."""

    def __init__(
        self,
        member_id: int,
        cluster_id: int = CLUSTER,
        snapshot: tuple[SnapshotMeta, bytes | Streamed] | None = None,
        lease_renew: Callable[[int], Awaitable[int]] | None = None,
        **options: Any,
    ) -> None:
        self.id = member_id
        self.got: list[Message] = []
        self.snapshot = snapshot

        async def renew(lease_id: int) -> int:
            return lease_id * 10

        self.transport = Transport(
            cluster_id,
            member_id,
            self.got.append,
            lease_renew or renew,
            lambda: self.snapshot,
            **options,
        )

    async def start(self, port: int = 0) -> Member:
        await self.transport.start(f"http://127.0.0.1:{port}")
        _running.append(self)
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.transport.port}"

    async def stop(self) -> None:
        if self in _running:
            _running.remove(self)
            await self.transport.stop(grace=None)


def heartbeats(frm: int, to: int, first: int, n: int) -> list[Message]:
    """Messages whose ``commit`` numbers them, so order can be checked on arrival."""
    return [Message(MessageType.HEARTBEAT, to, frm, 1, commit=i) for i in range(first, first + n)]
