"""What status says in each situation: conditions, phase, the operation, the whole object."""

from __future__ import annotations

from dataclasses import replace

from flotilla.operator import status
from flotilla.operator.model import Observed, Operation, Pvc, Spec
from flotilla.operator.plan import plan

from .world import NEW_HASH, NOW, mid, spec, world


def summary(sp: Spec, ob: Observed) -> dict[str, tuple[str, str]]:
    """Each condition as (status, reason), for the step the planner takes here."""
    step = plan(sp, ob)
    return {c.type: (c.status, c.reason) for c in status.conditions(sp, ob, step)}


def test_healthy_and_reconciled() -> None:
    sp, ob = spec(), world()
    assert summary(sp, ob) == {
        "Available": ("True", "QuorumAvailable"),
        "Progressing": ("False", "Reconciled"),
        "Degraded": ("False", "Healthy"),
    }
    assert status.phase(sp, ob, plan(sp, ob)) == "Running"


def test_bootstrapping() -> None:
    sp, ob = spec(), world(leader=None, state="new", cluster=False, unhealthy=(0, 1, 2))
    assert summary(sp, ob)["Available"] == ("False", "Bootstrapping")
    assert summary(sp, ob)["Progressing"] == ("True", "Bootstrapping")
    assert status.phase(sp, ob, plan(sp, ob)) == "Bootstrapping"


def test_creating() -> None:
    sp = spec()
    ob = world(voters=(), sts=0, cluster=False, missing=("statefulset", "pdb"))
    assert status.phase(sp, ob, plan(sp, ob)) == "Creating"
    assert summary(sp, ob)["Progressing"] == ("True", "Creating")


def test_quorum_lost_is_loud() -> None:
    sp, ob = spec(), world(leader=None, unhealthy=(1, 2))
    assert summary(sp, ob) == {
        "Available": ("False", "QuorumLost"),
        "Progressing": ("False", "QuorumLost"),
        "Degraded": ("True", "QuorumLost"),
    }
    assert status.phase(sp, ob, plan(sp, ob)) == "QuorumLost"


def test_scaling_up_and_down() -> None:
    sp, ob = spec(replicas=5), world()
    assert summary(sp, ob)["Progressing"] == ("True", "ScalingUp")
    assert status.phase(sp, ob, plan(sp, ob)) == "Scaling"
    op = status.operation(sp, ob, plan(sp, ob), "2026-01-01T00:00:00Z")
    assert op is not None and (op["type"], op["target"], op["step"]) == (
        "ScaleUp",
        "5",
        "AddingLearner",
    )
    sp, ob = spec(replicas=3), world(voters=range(5))
    assert summary(sp, ob)["Progressing"] == ("True", "ScalingDown")


def test_upgrading_targets_the_version() -> None:
    sp, ob = spec(version="1.1"), world(template_hash=NEW_HASH)
    assert summary(sp, ob)["Progressing"] == ("True", "Upgrading")
    op = status.operation(sp, ob, plan(sp, ob), "2026-01-01T00:00:00Z")
    assert op is not None and (op["type"], op["target"]) == ("Upgrade", "1.1")


def test_a_halted_rollout_is_degraded() -> None:
    sp = spec(version="1.1")
    ob = world(template_hash=NEW_HASH, pods_on={2: "1.1"}, unhealthy=(2,), now=NOW + 3600)
    got = summary(sp, ob)
    assert got["Degraded"] == ("True", "RolloutHalted")
    assert got["Progressing"] == ("False", "RolloutHalted")
    assert status.phase(sp, ob, plan(sp, ob)) == "Degraded"


def test_a_member_down_at_rest_is_degraded_but_available() -> None:
    sp, ob = spec(), world(unhealthy=(1,))
    got = summary(sp, ob)
    assert got["Available"] == ("True", "QuorumAvailable")
    assert got["Degraded"] == ("True", "MembersUnhealthy")
    assert status.phase(sp, ob, plan(sp, ob)) == "Degraded"


def test_an_alarm_is_degraded_and_says_what_it_stops() -> None:
    sp, healthy = spec(), world()
    assert healthy.cluster is not None
    cluster = replace(healthy.cluster, alarms=((mid(1), "CORRUPT"), (0xABC, "NOSPACE")))
    ob = replace(healthy, cluster=cluster)
    step = plan(sp, ob)
    degraded = next(c for c in status.conditions(sp, ob, step) if c.type == "Degraded")
    assert (degraded.status, degraded.reason) == ("True", "AlarmRaised")
    assert degraded.message == (
        "CORRUPT raised for member db-1: every write is refused until the member is replaced "
        "and it is disarmed; NOSPACE raised for member abc: writes that add data are refused "
        "until space is freed and it is disarmed"
    )
    assert status.phase(sp, ob, step) == "Degraded"
    assert summary(sp, ob)["Available"] == ("True", "QuorumAvailable")


def test_repairing() -> None:
    sp, ob = spec(), world(unhealthy=(1,), pvcs=(Pvc(0, mid(0)), Pvc(2, mid(2))))
    assert summary(sp, ob)["Progressing"] == ("True", "Repairing")
    assert status.phase(sp, ob, plan(sp, ob)) == "Repairing"


def test_operation_keeps_its_start_while_it_goes_on() -> None:
    sp, ob = spec(replicas=5), world()
    earlier = Operation("ScaleUp", "5", "AddingLearner", "2026-01-01T00:00:00Z")
    op = status.operation(sp, replace(ob, operation=earlier), plan(sp, ob), "2026-01-01T00:05Z")
    assert op is not None and op["startedAt"] == "2026-01-01T00:00:00Z"
    other = Operation("ScaleUp", "7", "AddingLearner", "2026-01-01T00:00:00Z")
    op = status.operation(sp, replace(ob, operation=other), plan(sp, ob), "2026-01-01T00:05Z")
    assert op is not None and op["startedAt"] == "2026-01-01T00:05Z"
    assert status.operation(spec(), world(), plan(spec(), world()), "now") is None


def test_conditions_move_their_transition_time_only_when_status_changes() -> None:
    before = [
        {"type": "Available", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"},
        {"type": "Degraded", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"},
    ]
    new = [
        status.Condition("Available", "True", "QuorumAvailable", "ok"),
        status.Condition("Degraded", "False", "Healthy"),
        status.Condition("Progressing", "False", "Reconciled"),
    ]
    out = {c["type"]: c for c in status.merge_conditions(before, new, "2026-02-02T00:00:00Z", 7)}
    assert out["Available"]["lastTransitionTime"] == "2026-01-01T00:00:00Z"
    assert out["Degraded"]["lastTransitionTime"] == "2026-02-02T00:00:00Z"
    assert out["Progressing"]["lastTransitionTime"] == "2026-02-02T00:00:00Z"
    assert all(c["observedGeneration"] == 7 for c in out.values())


def test_whole_status() -> None:
    sp = replace(spec(replicas=5), generation=3)
    ob = world(learners=(3,), unhealthy=(3,), sts=4)
    st = status.build(sp, ob, plan(sp, ob), previous={})
    assert st["observedGeneration"] == 3
    assert st["replicas"] == 4 and st["readyReplicas"] == 3
    assert st["selector"] == "app.kubernetes.io/name=flotilla,app.kubernetes.io/instance=db"
    assert st["leader"] == "db-0"
    assert st["currentVersion"] == "1.0"
    assert st["phase"] == "Scaling"
    assert st["operation"]["type"] == "ScaleUp"
    members = {m["name"]: m for m in st["members"]}
    assert members["db-3"] == {
        "name": "db-3",
        "id": f"{mid(3):x}",
        "role": "learner",
        "healthy": False,
        "appliedIndex": 1000,
        "version": "1.0",
    }
    assert members["db-0"]["role"] == "voter"
    assert {c["type"] for c in st["conditions"]} == {"Available", "Progressing", "Degraded"}
    assert status.iso(NOW).endswith("Z")


def test_status_during_an_upgrade_shows_both_versions() -> None:
    sp = spec(version="1.1")
    ob = world(template_hash=NEW_HASH, pods_on={2: "1.1"})
    assert status.build(sp, ob, plan(sp, ob), previous={})["currentVersion"] == "1.0,1.1"
