"""What the leader knows about each follower's log, and how it paces replication to it.

A follower is in one of three states (etcd-io/raft's names):

- PROBE: we do not know where its log ends. Send one append, wait for the answer.
- REPLICATE: the log is known to match; stream appends optimistically, bounded by the
  number and bytes of messages in flight.
- SNAPSHOT: it needs entries we compacted; a snapshot is on its way, send nothing else.
"""

from __future__ import annotations

import enum
from collections import deque


class ProgressState(enum.Enum):
    PROBE = "probe"
    REPLICATE = "replicate"
    SNAPSHOT = "snapshot"


class Inflights:
    """Appends sent but not yet acknowledged, as (last index, bytes) in sending order."""

    __slots__ = ("_queue", "bytes", "max_bytes", "max_count")

    def __init__(self, max_count: int, max_bytes: int) -> None:
        self._queue: deque[tuple[int, int]] = deque()
        self.bytes = 0
        self.max_count = max_count
        self.max_bytes = max_bytes

    def add(self, last_index: int, size: int) -> None:
        self._queue.append((last_index, size))
        self.bytes += size

    def free_le(self, index: int) -> None:
        q = self._queue
        while q and q[0][0] <= index:
            self.bytes -= q.popleft()[1]

    def free_first(self) -> None:
        if self._queue:
            self.bytes -= self._queue.popleft()[1]

    def full(self) -> bool:
        return len(self._queue) >= self.max_count or self.bytes >= self.max_bytes

    def reset(self) -> None:
        self._queue.clear()
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._queue)


class Progress:
    __slots__ = (
        "awaits_commit",
        "inflights",
        "match",
        "next",
        "paused",
        "pending_snapshot",
        "recent_active",
        "sent_commit",
        "snapshot_ticks",
        "state",
    )

    def __init__(self, next_index: int, max_inflight: int, max_inflight_bytes: int) -> None:
        self.match = 0
        self.next = next_index
        self.state = ProgressState.PROBE
        # In PROBE, one append is outstanding until an answer or heartbeat response arrives.
        self.paused = False
        self.pending_snapshot = 0
        self.snapshot_ticks = 0
        self.recent_active = True
        # The commit index last told to this follower. When the leader's commit index moves
        # past it, the follower hears of it with the next append, or from an empty one sent
        # at once if it waits for an index above what it was told (``awaits_commit``: its
        # forwarded proposals, its reads), else after a short delay.
        self.sent_commit = 0
        self.awaits_commit = 0
        self.inflights = Inflights(max_inflight, max_inflight_bytes)

    def __repr__(self) -> str:
        return (
            f"Progress({self.state.value} match={self.match} next={self.next} "
            f"inflight={len(self.inflights)})"
        )

    def become_probe(self) -> None:
        if self.state == ProgressState.SNAPSHOT:
            # The snapshot brought the follower at least this far (if it arrived).
            self.next = max(self.match + 1, self.pending_snapshot + 1)
        else:
            self.next = self.match + 1
        self.state = ProgressState.PROBE
        self.paused = False
        self.pending_snapshot = 0
        self.inflights.reset()

    def become_replicate(self) -> None:
        self.state = ProgressState.REPLICATE
        self.next = self.match + 1
        self.paused = False
        self.pending_snapshot = 0
        self.inflights.reset()

    def become_snapshot(self, index: int) -> None:
        self.state = ProgressState.SNAPSHOT
        self.pending_snapshot = index
        self.snapshot_ticks = 0
        self.paused = False
        self.inflights.reset()

    def maybe_update(self, index: int) -> bool:
        """An acknowledgement up to ``index``; True if it moved ``match`` forward."""
        updated = False
        if index > self.match:
            self.match = index
            updated = True
            self.paused = False
        if index + 1 > self.next:
            self.next = index + 1
        return updated

    def maybe_decrease(self, rejected: int, match_hint: int) -> bool:
        """A rejection of the append that followed ``rejected``; False if it is stale."""
        if self.state == ProgressState.REPLICATE:
            if rejected <= self.match:
                return False
            self.next = self.match + 1
            return True
        if self.next - 1 != rejected:
            return False
        self.next = max(min(rejected, match_hint + 1), self.match + 1)
        self.paused = False
        return True

    def is_paused(self) -> bool:
        if self.state == ProgressState.PROBE:
            return self.paused
        if self.state == ProgressState.REPLICATE:
            return self.inflights.full()
        return True
