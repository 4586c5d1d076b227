"""Whole operations, pass after pass, against a toy world that checks every step for safety.

The stories in test_plan.py pin single decisions; these let the planner drive a cluster from
nothing through scale-ups, scale-downs, upgrades, spec changes in the middle of all of them,
restarted pods and lost disks, and check that it always arrives, never unsafely.
"""

from __future__ import annotations

import pytest

from flotilla.operator import plan as p

from .toyworld import ToyWorld, assert_converged, chaos, run, want


def test_create_grow_upgrade_shrink() -> None:
    world = ToyWorld()
    for spec in (want(3), want(5), want(5, "1.1"), want(3, "1.1"), want(1, "1.1"), want(3)):
        assert isinstance(run(world, spec), p.Done), spec
        assert_converged(world, spec)


def test_scale_up_is_one_joint_step_and_learners_come_first() -> None:
    world = ToyWorld()
    run(world, want(3))
    world.steps.clear()
    run(world, want(5))
    kinds = [type(s).__name__ for s in world.steps if not isinstance(s, p.WaitFor | p.BindPvc)]
    assert kinds == ["AddLearner", "AddLearner", "ScaleStatefulSet", "Reconfigure"]


def test_scale_down_moves_leadership_then_reconfigures_then_shrinks_then_deletes_claims() -> None:
    world = ToyWorld()
    run(world, want(5, retention="Delete"))
    world.leader = max(world.members)  # the leader is on the highest ordinal
    world.steps.clear()
    run(world, want(3, retention="Delete"))
    kinds = [type(s).__name__ for s in world.steps if not isinstance(s, p.WaitFor)]
    assert kinds == ["TransferLeadership", "Reconfigure", "ScaleStatefulSet", "DeletePvcs"]
    assert sorted(world.pvcs) == [0, 1, 2]


def test_upgrade_restarts_followers_first_and_the_leader_last() -> None:
    world = ToyWorld()
    run(world, want(3))
    first_leader = world.leader
    leader_ordinal = world.members[first_leader].ordinal  # type: ignore[index]
    world.steps.clear()
    run(world, want(3, "1.1"))
    restarts = [s.ordinal for s in world.steps if isinstance(s, p.DeletePod)]
    assert sorted(restarts) == [0, 1, 2]
    assert restarts[-1] == leader_ordinal
    transfer = [s for s in world.steps if isinstance(s, p.TransferLeadership)]
    assert len(transfer) == 1


def test_a_failing_version_stops_after_one_pod_and_a_rollback_recovers() -> None:
    world = ToyWorld()
    run(world, want(3))
    step = run(world, want(3, "broken"), passes=400)
    assert isinstance(step, p.RolloutHalted)
    restarted = [s.ordinal for s in world.steps if isinstance(s, p.DeletePod)]
    assert len(restarted) == 1  # one pod down, the quorum untouched
    assert isinstance(run(world, want(3, "1.0")), p.Done)
    assert_converged(world, want(3, "1.0"))


def test_a_lost_disk_is_replaced_by_a_new_member() -> None:
    world = ToyWorld()
    run(world, want(3))
    old = {m.ordinal: i for i, m in world.members.items()}
    world.lose_claim(1)
    world.tick()
    assert isinstance(run(world, want(3), passes=400), p.Done)
    assert_converged(world, want(3))
    new = {m.ordinal: i for i, m in world.members.items()}
    assert new[1] != old[1] and new[0] == old[0] and new[2] == old[2]


@pytest.mark.parametrize("seed", range(40))
def test_random_spec_changes_and_faults_always_settle_safely(seed: int) -> None:
    """Any order of spec changes, restarts and a lost disk: safe at every step, then done.

    More seeds and harsher faults: python -m tests.operator.toyworld --seeds 5000
    """
    chaos(seed)
