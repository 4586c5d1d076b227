"""When a leader appends the proposals that arrived: once its last batch has committed."""

from __future__ import annotations

from flotilla.node.proposals import APPEND_HOLD, hold_for_commit


def test_proposals_wait_while_the_last_batch_is_uncommitted() -> None:
    assert hold_for_commit(uncommitted=True, since_append=0.0)
    assert hold_for_commit(uncommitted=True, since_append=APPEND_HOLD / 2)


def test_proposals_go_at_once_when_everything_is_committed() -> None:
    # A lone client: its last write committed before it sent the next one.
    assert not hold_for_commit(uncommitted=False, since_append=0.0)
    assert not hold_for_commit(uncommitted=False, since_append=10.0)


def test_a_commit_that_does_not_come_holds_writes_back_no_longer_than_the_limit() -> None:
    assert not hold_for_commit(uncommitted=True, since_append=APPEND_HOLD)
    assert not hold_for_commit(uncommitted=True, since_append=0.02, limit=0.01)
    assert hold_for_commit(uncommitted=True, since_append=0.009, limit=0.01)
