"""Keep-alives forwarded to the leader share calls: the coalescing logic alone.

The send function here is a stand-in for the gRPC call (this is a unit test of the batching
decisions); ``test_transport.py`` runs the real call between two transports.
"""

from __future__ import annotations

import asyncio

import pytest

from flotilla.node.transport.renewals import MAX_PER_CALL, NOT_FOUND, Renewals


class Leader:
    """Answers each call when released, recording the lease ids of every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, list[int]]] = []
        self.release = asyncio.Event()
        self.fail: Exception | None = None

    async def send(self, leader_id: int, lease_ids: list[int]) -> list[int]:
        self.calls.append((leader_id, list(lease_ids)))
        await self.release.wait()
        if self.fail is not None:
            raise self.fail
        return [NOT_FOUND if i < 0 else i * 10 for i in lease_ids]


def test_keep_alives_arriving_during_a_call_share_the_next_one() -> None:
    async def body() -> None:
        leader = Leader()
        r = Renewals(leader.send)
        first = asyncio.create_task(r.renew(1, 1))
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert leader.calls == [(1, [1])], "the first keep-alive goes out at once"
        rest = [asyncio.create_task(r.renew(1, i)) for i in range(2, 40)]
        await asyncio.sleep(0)
        assert len(leader.calls) == 1, "a second call went out while the first was in flight"
        leader.release.set()
        assert await first == 10
        assert await asyncio.gather(*rest) == [i * 10 for i in range(2, 40)]
        assert leader.calls == [(1, [1]), (1, list(range(2, 40)))]

    asyncio.run(body())


def test_each_leader_has_its_own_call_and_unknown_leases_are_told_apart() -> None:
    async def body() -> None:
        leader = Leader()
        leader.release.set()
        r = Renewals(leader.send)
        got = await asyncio.gather(r.renew(1, 5), r.renew(2, 6), r.renew(1, -3))
        assert got == [50, 60, NOT_FOUND]
        assert sorted(leader.calls) == [(1, [5, -3]), (2, [6])]

    asyncio.run(body())


def test_a_failed_call_fails_its_keep_alives_only() -> None:
    async def body() -> None:
        leader = Leader()
        r = Renewals(leader.send)
        doomed = asyncio.create_task(r.renew(1, 1))
        await asyncio.sleep(0)
        leader.fail = ConnectionError("leader unreachable")
        leader.release.set()
        with pytest.raises(ConnectionError, match="unreachable"):
            await doomed
        leader.fail = None
        assert await r.renew(1, 2) == 20, "the next keep-alive gets a call of its own"

    asyncio.run(body())


def test_a_call_carries_at_most_max_per_call_and_skips_abandoned_ones() -> None:
    async def body() -> None:
        leader = Leader()
        r = Renewals(leader.send)
        blocker = asyncio.create_task(r.renew(1, 0))
        await asyncio.sleep(0)
        many = [asyncio.create_task(r.renew(1, i)) for i in range(1, MAX_PER_CALL + 11)]
        abandoned = asyncio.create_task(r.renew(1, 99_999))
        await asyncio.sleep(0)
        abandoned.cancel()
        leader.release.set()
        await blocker
        assert await asyncio.gather(*many) == [i * 10 for i in range(1, MAX_PER_CALL + 11)]
        sizes = [len(ids) for _, ids in leader.calls]
        assert sizes == [1, MAX_PER_CALL, 10]
        assert all(99_999 not in ids for _, ids in leader.calls)

    asyncio.run(body())


def test_close_fails_whoever_still_waits() -> None:
    async def body() -> None:
        leader = Leader()
        r = Renewals(leader.send)
        waiting = [asyncio.create_task(r.renew(1, i)) for i in range(3)]
        await asyncio.sleep(0)
        await r.close()
        for task in waiting:
            with pytest.raises(ConnectionError):
                await task

    asyncio.run(body())
