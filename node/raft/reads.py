"""ReadIndex and lease-read bookkeeping (§6.4 of the Raft thesis).

A linearizable read records the commit index, then waits until a quorum has confirmed that
this leader was still the leader *after* the read arrived. Confirmation rides on heartbeat
rounds: every heartbeat broadcast is a numbered round, and every read waiting when a round
starts is covered by it, so a thousand reads cost one round of messages. A round counts as
confirmed once a quorum has echoed its number (or a later one).

Reads start at most one round at a time, whichever member asked: a read that arrives while a
round is out waits for the next, which starts as soon as that one is confirmed. Each round
then carries the reads of every member, and a follower's next request rides its echo of the
round before (the driver sends it with the acknowledgement), so under load a round costs one
message each way per follower.

A lease read skips the round: with check-quorum, followers that heard from the leader within
an election timeout refuse to vote, so for slightly less than that time after a confirmed
round no other leader can exist. The lease is measured in the leader's own ticks from the
*start* of the confirmed round.
"""

from __future__ import annotations

import heapq
from collections import deque
from dataclasses import dataclass

from .types import ReadState


@dataclass(slots=True)
class PendingRead:
    round: int
    index: int
    requester: int
    contexts: tuple[bytes, ...]


class ReadRounds:
    """The leader's reads waiting for their heartbeat round to be confirmed."""

    __slots__ = ("acks", "confirmed", "lease_until", "open", "pending", "round", "starts")

    def __init__(self) -> None:
        self.round = 0
        # True while the newest round's heartbeats have not left the core yet: reads that
        # arrive meanwhile join it instead of starting another.
        self.open = False
        self.confirmed = 0
        self.acks: dict[int, int] = {}
        self.starts: dict[int, int] = {}
        self.pending: deque[PendingRead] = deque()
        self.lease_until = 0

    def start_round(self, now: int) -> int:
        self.round += 1
        self.starts[self.round] = now
        self.open = True
        return self.round

    def in_flight(self) -> bool:
        """Whether a round has started that a quorum has not confirmed yet."""
        return self.round > self.confirmed

    def ack(self, peer: int, round_: int) -> bool:
        """Record an echo; True if it is news (a later round than this peer had echoed)."""
        if round_ > self.acks.get(peer, 0):
            self.acks[peer] = round_
            return True
        return False

    def confirm(self, round_: int, lease_ticks: int) -> list[PendingRead]:
        """Round ``round_`` is confirmed by a quorum: release every read it covers."""
        if round_ <= self.confirmed:
            return []
        self.confirmed = round_
        start = self.starts.get(round_)
        if start is not None and lease_ticks > 0:
            self.lease_until = max(self.lease_until, start + lease_ticks)
        for r in [r for r in self.starts if r <= round_]:
            del self.starts[r]
        released: list[PendingRead] = []
        while self.pending and self.pending[0].round <= round_:
            released.append(self.pending.popleft())
        return released

    def revoke_lease(self) -> None:
        """Forget the lease, and any a round already under way would grant: time has
        passed that the leader's ticks do not show (see ``RaftCore.forget_lease``)."""
        self.lease_until = 0
        self.starts.clear()


class ReleaseQueue:
    """Read states whose index is known, waiting for the state machine to reach it."""

    __slots__ = ("_heap", "_seq")

    def __init__(self) -> None:
        self._heap: list[tuple[int, int, tuple[bytes, ...]]] = []
        self._seq = 0

    def add(self, index: int, contexts: tuple[bytes, ...]) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (index, self._seq, contexts))

    def ready(self, applied: int) -> bool:
        return bool(self._heap) and self._heap[0][0] <= applied

    def release(self, applied: int) -> list[ReadState]:
        out: list[ReadState] = []
        heap = self._heap
        while heap and heap[0][0] <= applied:
            index, _, contexts = heapq.heappop(heap)
            if out and out[-1].index == index:
                out[-1] = ReadState(index, out[-1].contexts + contexts)
            else:
                out.append(ReadState(index, contexts))
        return out

    def __len__(self) -> int:
        return len(self._heap)
