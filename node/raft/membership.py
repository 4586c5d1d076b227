"""Configuration transitions: which configuration a requested change installs.

Every change of the voter set goes through joint consensus, even a single addition: the
uniform path is simpler to reason about than a special case for one-at-a-time changes, and
it lets 3 -> 5 or 5 -> 3 happen in one transition. A change that only touches learners
leaves every quorum as it is, so it is installed directly.
"""

from __future__ import annotations

from collections.abc import Iterable

from .errors import ConfChangeRejected
from .types import ConfState


def next_conf(current: ConfState, voters: Iterable[int], learners: Iterable[int]) -> ConfState:
    """The configuration to propose for the target ``voters`` and ``learners``."""
    if current.joint:
        raise ConfChangeRejected(
            f"configuration {current} is still in a joint transition", retriable=True
        )
    new_voters = frozenset(voters)
    new_learners = frozenset(learners)
    if not new_voters:
        raise ConfChangeRejected("a configuration needs at least one voter", retriable=False)
    both = new_voters & new_learners
    if both:
        raise ConfChangeRejected(
            f"members {sorted(both)} cannot be voter and learner at once", retriable=False
        )
    if 0 in new_voters or 0 in new_learners:
        raise ConfChangeRejected("member id 0 is reserved", retriable=False)
    if new_voters == current.voters:
        target = ConfState(new_voters, frozenset(), new_learners)
    else:
        target = ConfState(new_voters, current.voters, new_learners)
    if target == current:
        raise ConfChangeRejected(f"configuration is already {current}", retriable=False)
    return target
