"""Precise exception types of the Raft core."""

from __future__ import annotations


class RaftError(Exception):
    """Base of everything the core raises on purpose."""


class ProposalDropped(RaftError):
    """The proposal was not accepted: no leader is known, or leadership is being handed over.

    Retriable: the caller should retry, possibly on another member.
    """


class NotLeader(RaftError):
    """The operation needs the leader and this member is not it."""

    def __init__(self, leader: int) -> None:
        super().__init__(f"not the leader (leader is {leader or 'unknown'})")
        self.leader = leader


class ConfChangeRejected(RaftError):
    """A configuration change that cannot start now or is invalid."""

    def __init__(self, reason: str, *, retriable: bool) -> None:
        super().__init__(reason)
        self.retriable = retriable


class CompactedError(RaftError):
    """The requested entry was compacted into a snapshot."""

    def __init__(self, index: int) -> None:
        super().__init__(f"entry {index} has been compacted")
        self.index = index


class RaftInvariantError(RaftError):
    """Stored or received state that violates Raft's invariants; never papered over."""
