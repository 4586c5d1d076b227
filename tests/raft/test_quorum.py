from __future__ import annotations

from flotilla.node.raft.quorum import (
    INFINITE,
    VoteResult,
    joint_index,
    joint_vote,
    majority_index,
    majority_vote,
)


def test_majority_index_is_what_a_majority_has_reached() -> None:
    match = {1: 5, 2: 3, 3: 9}
    assert majority_index({1, 2, 3}, match.__getitem__) == 5
    match = {1: 5, 2: 3, 3: 9, 4: 1}
    assert majority_index({1, 2, 3, 4}, match.__getitem__) == 3
    assert majority_index(set(), match.__getitem__) == INFINITE


def test_joint_index_is_the_smaller_of_both_majorities() -> None:
    match = {1: 10, 2: 10, 3: 10, 4: 2, 5: 2}
    assert joint_index({1, 4, 5}, {1, 2, 3}, match.__getitem__) == 2
    assert joint_index({1, 2, 3}, set(), match.__getitem__) == 10


def test_votes() -> None:
    assert majority_vote({1, 2, 3}, {1: True, 2: True}) == VoteResult.WON
    assert majority_vote({1, 2, 3}, {1: True, 2: False}) == VoteResult.PENDING
    assert majority_vote({1, 2, 3}, {1: False, 2: False}) == VoteResult.LOST
    assert joint_vote({1, 2, 3}, {3, 4, 5}, {1: True, 2: True, 3: True}) == VoteResult.PENDING
    assert joint_vote({1, 2, 3}, {3, 4, 5}, {1: True, 4: False, 5: False}) == VoteResult.LOST
    both = {1: True, 2: True, 4: True, 5: True}
    assert joint_vote({1, 2, 3}, {3, 4, 5}, both) == VoteResult.WON
