"""When the driver asks for a ReadIndex: one at a time, unless one seems lost or it rides
for free."""

from __future__ import annotations

import asyncio

from flotilla.node.proposals import Waiters


def _waiters() -> tuple[Waiters, asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    return Waiters(1, read_timeout=5.0), loop


def test_no_round_without_reads_waiting() -> None:
    w, loop = _waiters()
    try:
        assert not w.read_round_due(100.0, retry=0.5)
    finally:
        loop.close()


def test_reads_wait_for_the_round_in_flight_then_start_the_next() -> None:
    w, loop = _waiters()
    try:
        w.reads_queued.append(loop.create_future())
        assert w.read_round_due(100.0, retry=0.5)  # nothing in flight: start at once
        w.reads[b"r1"] = (100.0 + 5.0, w.reads_queued)
        w.reads_queued = [loop.create_future()]
        assert not w.read_round_due(100.2, retry=0.5)  # they ride the next round
        w.release_reads((b"r1",))
        assert w.read_round_due(100.2, retry=0.5)  # which starts when the last returns
    finally:
        loop.close()


def test_a_round_that_does_not_return_is_joined_by_another_after_the_retry() -> None:
    w, loop = _waiters()
    try:
        w.reads[b"lost"] = (100.0 + 5.0, [loop.create_future()])
        w.reads_queued.append(loop.create_future())
        assert not w.read_round_due(100.49, retry=0.5)
        assert w.read_round_due(100.5, retry=0.5)
        w.reads[b"next"] = (100.5 + 5.0, w.reads_queued)
        w.reads_queued = [loop.create_future()]
        # The newest round counts: the next retry is half a second after it.
        assert not w.read_round_due(100.9, retry=0.5)
        assert w.read_round_due(101.0, retry=0.5)
    finally:
        loop.close()


def test_a_request_that_rides_for_free_goes_even_with_one_out() -> None:
    w, loop = _waiters()
    try:
        w.reads[b"r1"] = (100.0 + 5.0, [loop.create_future()])
        assert not w.read_round_due(100.1, retry=0.5, free_ride=True), "nothing to ask for"
        w.reads_queued.append(loop.create_future())
        assert not w.read_round_due(100.1, retry=0.5)
        assert w.read_round_due(100.1, retry=0.5, free_ride=True)
    finally:
        loop.close()
