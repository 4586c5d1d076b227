"""The Raft log as the core sees it: entries after the last compaction point, in memory.

The application persists what ``unstable_entries`` returns and reports it with
``stable_to``; on restart it hands back what it stored. Entries before ``offset`` are gone
from memory and disk: they live on only in a snapshot.

Byte sizes of entries are kept as a running prefix sum (``_cum``) so that cutting a message
at a byte limit is a bisection, not a Python loop per entry per follower.
"""

from __future__ import annotations

from bisect import bisect_right
from itertools import accumulate

from .errors import CompactedError, RaftInvariantError
from .types import ENTRY_OVERHEAD, Entry, Snapshot, SnapshotMeta


def _sizes(entries: list[Entry]) -> list[int]:
    return [len(e.data) + ENTRY_OVERHEAD for e in entries]


class RaftLog:
    __slots__ = (
        "_cum",
        "applied",
        "committed",
        "entries",
        "offset",
        "offset_term",
        "pending_snapshot",
        "snapshot",
        "stable",
    )

    def __init__(
        self, snapshot: SnapshotMeta, entries: list[Entry], committed: int, applied: int
    ) -> None:
        if entries and entries[0].index != snapshot.index + 1:
            raise RaftInvariantError(
                f"stored entries start at {entries[0].index}, expected {snapshot.index + 1}"
            )
        last = entries[-1].index if entries else snapshot.index
        if not snapshot.index <= applied <= committed <= last:
            raise RaftInvariantError(
                f"inconsistent stored state: snapshot {snapshot.index} applied {applied} "
                f"commit {committed} last {last}"
            )
        self.snapshot = snapshot
        self.offset = snapshot.index
        self.offset_term = snapshot.term
        self.entries: list[Entry] = list(entries)
        self._cum: list[int] = [0]
        self._cum.extend(accumulate(_sizes(self.entries)))
        self.stable = last
        self.committed = committed
        self.applied = applied
        self.pending_snapshot: Snapshot | None = None

    # -- lookups -------------------------------------------------------------------------

    def first_index(self) -> int:
        return self.offset + 1

    def last_index(self) -> int:
        return self.offset + len(self.entries)

    def last_term(self) -> int:
        return self.entries[-1].term if self.entries else self.offset_term

    def term(self, index: int) -> int | None:
        """The term of the entry at ``index``; ``None`` if compacted away or beyond the end."""
        if index == self.offset:
            return self.offset_term
        if index < self.offset:
            return None
        pos = index - self.offset - 1
        if pos >= len(self.entries):
            return None
        return self.entries[pos].term

    def match_term(self, index: int, term: int) -> bool:
        t = self.term(index)
        return t is not None and t == term

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        """The voting rule (§5.4.1): is a candidate's log at least as up to date as ours?"""
        mine = self.last_term()
        return last_term > mine or (last_term == mine and last_index >= self.last_index())

    def slice(self, lo: int, max_bytes: int, max_count: int) -> list[Entry]:
        """Entries from ``lo`` on, at most ``max_count`` and ``max_bytes`` (but at least one)."""
        if lo <= self.offset:
            raise CompactedError(lo)
        start = lo - self.offset - 1
        n = len(self.entries)
        if start >= n:
            return []
        end = min(n, start + max_count)
        cum = self._cum
        if cum[end] - cum[start] > max_bytes:
            end = max(start + 1, bisect_right(cum, cum[start] + max_bytes, start, end + 1) - 1)
        return self.entries[start:end]

    def bytes_between(self, lo: int, hi: int) -> int:
        """Payload plus overhead of entries ``lo..hi`` inclusive (all in memory)."""
        return self._cum[hi - self.offset] - self._cum[lo - self.offset - 1]

    def find_conflict_by_term(self, index: int, term: int) -> tuple[int, int]:
        """The last index <= ``index`` whose term is <= ``term``, with that term.

        Both sides use this for fast backtracking: an append that is rejected at ``index``
        skips every entry of a term the other side cannot have.
        """
        index = min(index, self.last_index())
        while index > self.offset:
            t = self.entries[index - self.offset - 1].term
            if t <= term:
                return index, t
            index -= 1
        return self.offset, self.offset_term

    # -- changes -------------------------------------------------------------------------

    def append(self, entries: list[Entry]) -> None:
        """Append entries that continue the log or replace an uncommitted suffix of it."""
        if not entries:
            return
        first = entries[0].index
        last = self.last_index()
        if first != last + 1:
            if first <= self.committed:
                raise RaftInvariantError(
                    f"refusing to overwrite committed entry {first} (commit {self.committed})"
                )
            if first <= self.offset or first > last + 1:
                raise RaftInvariantError(f"append at {first} to log ({self.offset}, {last}]")
            cut = first - self.offset - 1
            del self.entries[cut:]
            del self._cum[cut + 1 :]
            self.stable = min(self.stable, first - 1)
        self.entries.extend(entries)
        sums = accumulate(_sizes(entries), initial=self._cum[-1])
        next(sums)  # the initial value itself is already the last element
        self._cum.extend(sums)

    def maybe_append(
        self, prev_index: int, prev_term: int, committed: int, entries: list[Entry]
    ) -> tuple[int, int] | None:
        """The follower's side of AppendEntries.

        Returns the last index this log now matches the leader's at, and the index from which
        entries were written (0 if none were). ``None`` means the consistency check failed:
        we have no entry ``prev_index`` of ``prev_term``.
        """
        if not self.match_term(prev_index, prev_term):
            return None
        last_new = prev_index + len(entries)
        conflict = 0
        if entries:
            conflict = self._find_conflict(entries)
            if conflict:
                self.append(entries[conflict - entries[0].index :])
        self.commit_to(min(committed, last_new))
        return last_new, conflict

    def _find_conflict(self, entries: list[Entry]) -> int:
        """Index of the first entry that we lack or hold with another term; 0 if none."""
        last = self.last_index()
        first = entries[0].index
        if first > last:
            return first
        tail = entries[-1]
        if tail.index <= last and self.match_term(tail.index, tail.term):
            # Log matching: same index and term at the end means the same entries before.
            return 0
        for e in entries:
            if not self.match_term(e.index, e.term):
                return e.index
        return 0

    def commit_to(self, index: int) -> None:
        if index > self.committed:
            if index > self.last_index():
                raise RaftInvariantError(
                    f"commit {index} is beyond the last index {self.last_index()}"
                )
            self.committed = index

    def unstable_entries(self) -> list[Entry]:
        if self.stable >= self.last_index():
            return []
        return self.entries[self.stable - self.offset :]

    def stable_to(self, index: int, term: int) -> None:
        """Entries up to ``index`` are durable, if the log still holds ``index`` at ``term``."""
        if index > self.stable and self.match_term(index, term):
            self.stable = index

    def apply_limit(self) -> int:
        """Entries up to here may be applied: committed, and durable on this member."""
        return min(self.committed, self.stable)

    def next_committed(self, max_bytes: int) -> list[Entry]:
        lo = self.applied + 1
        if self.pending_snapshot is not None:
            lo = max(lo, self.pending_snapshot.meta.index + 1)
        hi = self.apply_limit()
        if lo > hi:
            return []
        ents = self.slice(lo, max_bytes, hi - lo + 1)
        return ents

    def has_next_committed(self) -> bool:
        lo = self.applied + 1
        if self.pending_snapshot is not None:
            lo = max(lo, self.pending_snapshot.meta.index + 1)
        return lo <= self.apply_limit()

    def applied_to(self, index: int) -> None:
        if index > self.applied:
            if index > self.committed:
                raise RaftInvariantError(f"applied {index} beyond commit {self.committed}")
            self.applied = index

    def restore(self, snapshot: Snapshot) -> None:
        """Discard the whole log in favour of a snapshot (the entry at its index differs)."""
        meta = snapshot.meta
        self.entries = []
        self._cum = [0]
        self.offset = meta.index
        self.offset_term = meta.term
        self.stable = meta.index
        self.committed = meta.index
        self.snapshot = meta
        self.pending_snapshot = snapshot

    def compact(self, index: int) -> None:
        """Drop entries up to ``index``; the latest snapshot must already cover them."""
        if index <= self.offset:
            return
        if index > self.snapshot.index or index > self.applied:
            raise RaftInvariantError(
                f"cannot compact to {index}: snapshot {self.snapshot.index}, applied {self.applied}"
            )
        term = self.term(index)
        assert term is not None
        cut = index - self.offset
        del self.entries[:cut]
        del self._cum[:cut]
        self.offset = index
        self.offset_term = term
