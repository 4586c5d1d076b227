"""Client requests waiting on the driver loop: proposals and linearizable reads.

Both are batched: every proposal that arrived since the leader's last append goes into one
``RaftCore.propose`` call (one log append, one fsync, one message per follower) once that
append has committed, and every read waiting when a ReadIndex round starts shares that round
(one round at a time).
"""

from __future__ import annotations

import asyncio
import itertools
import struct
from dataclasses import dataclass, field

APPEND_HOLD = 0.005
"""Seconds at most that a leader keeps new proposals out of its log while its last append
is not committed yet (``hold_for_commit``)."""


def hold_for_commit(uncommitted: bool, since_append: float, limit: float = APPEND_HOLD) -> bool:
    """Whether a leader keeps the proposals that just arrived out of its log for now.

    Group commit: while the last batch it appended is replicating, what arrives waits and
    then goes into the log as one batch when that one commits, instead of each arrival
    starting a batch of its own. A member's cost under load is mostly per batch (a synced
    write on every member, a message each way per follower, a turn, an apply), and a leader
    sees many small arrivals when clients spread their requests over every member (etcd's
    client balances each request over its endpoints) or when followers forward theirs.
    A lone client never waits: its last write was committed before it sent the next. The
    wait is bounded (``limit`` after the last append) so that a commit that does not come
    (no quorum) holds writes back no longer than that.
    """
    return uncommitted and since_append < limit


@dataclass(slots=True)
class PendingProposal:
    request_id: bytes
    data: bytes
    future: asyncio.Future[object]
    deadline: float


@dataclass
class Waiters:
    """Futures keyed by request id (proposals) or read context (reads)."""

    member_id: int
    _seq: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    queued: list[PendingProposal] = field(default_factory=list)
    proposals: dict[bytes, PendingProposal] = field(default_factory=dict)
    reads_queued: list[asyncio.Future[None]] = field(default_factory=list)
    reads: dict[bytes, tuple[float, list[asyncio.Future[None]]]] = field(default_factory=dict)
    """Rounds in flight: context → (deadline, the reads it carries)."""
    read_timeout: float = 5.0
    """Seconds a read waits for its round before it fails (the deadline in ``reads``)."""

    def new_request_id(self) -> bytes:
        return struct.pack(">QQ", self.member_id, next(self._seq))

    def take_queued(self) -> list[PendingProposal]:
        batch, self.queued = self.queued, []
        for p in batch:
            self.proposals[p.request_id] = p
        return batch

    def resolve(self, request_id: bytes, result: object) -> None:
        p = self.proposals.pop(request_id, None)
        if p is not None and not p.future.done():
            if isinstance(result, BaseException):
                p.future.set_exception(result)
            else:
                p.future.set_result(result)

    def fail_all(self, exc_factory: type[BaseException], message: str) -> None:
        for p in [*self.queued, *self.proposals.values()]:
            if not p.future.done():
                p.future.set_exception(exc_factory(message))
        self.queued.clear()
        self.proposals.clear()
        for fut in self.reads_queued:
            if not fut.done():
                fut.set_exception(exc_factory(message))
        self.reads_queued.clear()
        for _, futs in self.reads.values():
            for fut in futs:
                if not fut.done():
                    fut.set_exception(exc_factory(message))
        self.reads.clear()

    def expire(self, now: float, exc: BaseException) -> int:
        """Fail what waited past its deadline (a forwarded proposal or read can be lost).

        Returns how many proposals failed.
        """
        expired = [rid for rid, p in self.proposals.items() if p.deadline <= now]
        for rid in expired:
            p = self.proposals.pop(rid)
            if not p.future.done():
                p.future.set_exception(exc)
        for ctx in [ctx for ctx, (deadline, _) in self.reads.items() if deadline <= now]:
            _, futs = self.reads.pop(ctx)
            for fut in futs:
                if not fut.done():
                    fut.set_exception(exc)
        return len(expired)

    def read_round_due(self, now: float, retry: float, *, free_ride: bool = False) -> bool:
        """Whether to ask for a ReadIndex for the queued reads now.

        One request at a time, as etcd's read loop does: reads that arrive while one is out
        wait for the next, which starts when it returns, so under load every request
        carries many reads instead of each turn paying a message for a few. A request can
        be lost (a leader change drops a forwarded ReadIndex), so after ``retry`` seconds
        without an answer the next one starts anyway.

        ``free_ride``: ask now regardless, because it costs no message of its own. On the
        leader the core joins the reads to its next round itself (one round in flight); a
        follower that answers a heartbeat in this turn sends its request with that answer.
        """
        if not self.reads_queued:
            return False
        if free_ride:
            return True
        started = max((d for d, _ in self.reads.values()), default=None)
        return started is None or now - (started - self.read_timeout) >= retry

    def release_reads(self, contexts: tuple[bytes, ...]) -> None:
        for ctx in contexts:
            entry = self.reads.pop(ctx, None)
            if entry is None:
                continue
            for fut in entry[1]:
                if not fut.done():
                    fut.set_result(None)
