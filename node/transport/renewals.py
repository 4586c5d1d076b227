"""Lease keep-alives a follower forwards to the leader, many leases per call.

Only the leader keeps lease deadlines, so a follower forwards every keep-alive its clients
send. One call per keep-alive costs both members a whole gRPC call each, which is most of
what a keep-alive costs. Here one call is in flight per leader at a time and keep-alives
that arrive meanwhile ride the next one, as linearizable reads share a ReadIndex round: at
one keep-alive at a time nothing waits longer than before, and under load each call carries
many.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

NOT_FOUND = -1
"""The TTL reported for a lease the leader does not know (expired or revoked)."""

MAX_PER_CALL = 1024
"""Lease ids in one call at most; the rest wait for the next."""

SendBatch = Callable[[int, list[int]], Awaitable[list[int]]]
"""(leader id, lease ids) -> one TTL per lease id, in order."""


class Renewals:
    def __init__(self, send: SendBatch) -> None:
        self._send = send
        self._waiting: dict[int, list[tuple[int, asyncio.Future[int]]]] = {}
        self._calls: dict[int, asyncio.Task[None]] = {}

    async def renew(self, leader_id: int, lease_id: int) -> int:
        """The lease's TTL as the leader renewed it, or ``NOT_FOUND``.

        Raises what the call to the leader raised (unreachable, timed out, not the leader).
        """
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[int] = loop.create_future()
        self._waiting.setdefault(leader_id, []).append((lease_id, fut))
        if leader_id not in self._calls:
            self._calls[leader_id] = loop.create_task(self._drain(leader_id))
        return await fut

    async def close(self) -> None:
        """Stop calling; whoever still waits gets a ConnectionError."""
        calls = list(self._calls.values())
        for task in calls:
            task.cancel()
        await asyncio.gather(*calls, return_exceptions=True)
        for waiting in self._waiting.values():
            _fail(waiting, ConnectionError("the transport is stopping"))
        self._waiting.clear()

    async def _drain(self, leader_id: int) -> None:
        try:
            while waiting := self._waiting.pop(leader_id, None):
                if len(waiting) > MAX_PER_CALL:
                    self._waiting[leader_id] = waiting[MAX_PER_CALL:]
                    waiting = waiting[:MAX_PER_CALL]
                waiting = [(lease, fut) for lease, fut in waiting if not fut.done()]
                if not waiting:
                    continue  # every caller gave up (cancelled)
                try:
                    ttls = await self._send(leader_id, [lease for lease, _ in waiting])
                    if len(ttls) != len(waiting):
                        raise ConnectionError(
                            f"the leader answered {len(ttls)} TTLs for {len(waiting)} leases"
                        )
                except asyncio.CancelledError:
                    _fail(waiting, ConnectionError("the transport is stopping"))
                    raise
                except Exception as exc:
                    _fail(waiting, exc)
                    continue
                for (_, fut), ttl in zip(waiting, ttls, strict=True):
                    if not fut.done():
                        fut.set_result(ttl)
        finally:
            del self._calls[leader_id]


def _fail(waiting: list[tuple[int, asyncio.Future[int]]], exc: BaseException) -> None:
    for _, fut in waiting:
        if not fut.done():
            fut.set_exception(exc)
