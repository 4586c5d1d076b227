"""Majority and joint-majority arithmetic, and nothing else.

A joint configuration (C_old,new) decides only what both of its majorities decide: the
committed index is the smaller of the two, an election is won only when both are won and
lost as soon as either is lost. An empty outgoing set decides nothing by itself, so it never
holds the incoming one back.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Collection, Mapping

INFINITE = 1 << 62


class VoteResult(enum.Enum):
    PENDING = 0
    WON = 1
    LOST = 2


def majority_index(voters: Collection[int], value: Callable[[int], int]) -> int:
    """The largest index that a majority of ``voters`` has reached (by ``value``).

    An empty set has no opinion and returns ``INFINITE`` so that ``min`` over a joint
    configuration ignores it.
    """
    n = len(voters)
    if n == 0:
        return INFINITE
    if n == 1:
        for v in voters:
            return value(v)
    ordered = sorted(value(v) for v in voters)
    # Ascending order: the element at n - (n//2 + 1) is reached by n//2 + 1 voters.
    return ordered[n - (n // 2 + 1)]


def joint_index(
    incoming: Collection[int], outgoing: Collection[int], value: Callable[[int], int]
) -> int:
    return min(majority_index(incoming, value), majority_index(outgoing, value))


def majority_vote(voters: Collection[int], votes: Mapping[int, bool]) -> VoteResult:
    if not voters:
        return VoteResult.WON
    granted = missing = 0
    for v in voters:
        vote = votes.get(v)
        if vote is None:
            missing += 1
        elif vote:
            granted += 1
    quorum = len(voters) // 2 + 1
    if granted >= quorum:
        return VoteResult.WON
    if granted + missing >= quorum:
        return VoteResult.PENDING
    return VoteResult.LOST


def joint_vote(
    incoming: Collection[int], outgoing: Collection[int], votes: Mapping[int, bool]
) -> VoteResult:
    a = majority_vote(incoming, votes)
    b = majority_vote(outgoing, votes)
    if a == b:
        return a
    if VoteResult.LOST in (a, b):
        return VoteResult.LOST
    return VoteResult.PENDING
