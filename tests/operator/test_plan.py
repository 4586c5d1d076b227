"""The planner, one story per row: the world as it is, the spec, and the one next step.

Read a row as "given <world>, wanting <spec>, the operator does <step>". The world builder
(``world.py``) starts from a healthy three-member cluster and each keyword changes one fact.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import pytest

from flotilla.operator.model import Member, Observed, Operation, Pvc, Spec
from flotilla.operator.plan import (
    REPAIR_GRACE_S,
    ROLLOUT_CRASHES,
    ROLLOUT_TIMEOUT_S,
    AddLearner,
    BindPvc,
    CreateResources,
    DeletePod,
    DeletePvcs,
    Done,
    Reconfigure,
    RemoveMembers,
    ReplaceMember,
    ReportQuorumLost,
    RolloutHalted,
    ScaleStatefulSet,
    Step,
    TransferLeadership,
    UpdateTemplate,
    WaitFor,
    plan,
)

from .world import HASH, NEW_HASH, NOW, mid, pod, spec, world

NEW_ID = 0xB1  # the member that replaces one whose data was lost


@dataclass(frozen=True)
class Story:
    title: str
    spec: Spec
    world: Observed
    step: Step | type[Step]  # a class: any step of that class (used for waits' wording)
    why: str = ""  # for WaitFor: the expected ``why``

    def __str__(self) -> str:
        return self.title


STORIES = [
    # --- creation and bootstrap ---------------------------------------------------------
    Story(
        "a new cluster gets its Services, StatefulSet and budget, bootstrapping as new",
        spec(),
        world(
            voters=(),
            sts=0,
            missing=("statefulset", "peer-service", "client-service", "pdb"),
            cluster=False,
        ),
        CreateResources(("client-service", "pdb", "peer-service", "statefulset"), 3, "new"),
    ),
    Story(
        "a deleted budget is recreated, nothing else is touched",
        spec(),
        world(missing=("pdb",)),
        CreateResources(("pdb",), 3, "existing"),
    ),
    Story(
        "a StatefulSet deleted under a cluster with data comes back joining, not bootstrapping",
        spec(),
        world(missing=("statefulset",), cluster=False),
        CreateResources(("statefulset",), 3, "existing"),
    ),
    Story(
        "while the first members have not elected a leader, the operator waits",
        spec(),
        world(leader=None, unhealthy=(0, 1, 2), state="new", pvcs=(), cluster=False),
        WaitFor,
        "Bootstrapping",
    ),
    Story(
        "once a leader exists, pods created later must join: the template says existing",
        spec(),
        world(state="new", pvcs=(Pvc(0), Pvc(1), Pvc(2))),
        UpdateTemplate(HASH, "existing"),
    ),
    Story(
        "a healthy member's fresh claim is bound to it, so a lost claim can be told later",
        spec(),
        world(pvcs=(Pvc(0, mid(0)), Pvc(1), Pvc(2))),
        BindPvc(1, mid(1)),
    ),
    Story(
        "a claim is not bound while its member is not healthy",
        spec(),
        world(
            unhealthy=(1,),
            pods=[pod(0), pod(1, ready=False, created_at=NOW - 10), pod(2)],
            pvcs=(Pvc(0, mid(0)), Pvc(1), Pvc(2, mid(2))),
        ),
        Done(),
    ),
    Story(
        "a healthy cluster that matches its spec: nothing to do",
        spec(),
        world(),
        Done(),
    ),
    # --- scale up 3 -> 5 ----------------------------------------------------------------
    Story(
        "scale up: the first new pod is added as a learner before its pod exists",
        spec(replicas=5),
        world(),
        AddLearner(3),
    ),
    Story(
        "scale up: then the second",
        spec(replicas=5),
        world(learners=(3,), sts=3, unhealthy=(3,)),
        AddLearner(4),
    ),
    Story(
        "scale up: with a member for every pod, the StatefulSet grows to hold them",
        spec(replicas=5),
        world(learners=(3, 4), sts=3, unhealthy=(3, 4)),
        ScaleStatefulSet(5),
    ),
    Story(
        "scale up: learners that are still catching up are not promoted",
        spec(replicas=5),
        world(learners=(3, 4), lag={4: 50_000}),
        WaitFor,
        "LearnersCatchingUp",
    ),
    Story(
        "scale up: learners whose pods are not up yet are not promoted",
        spec(replicas=5),
        world(learners=(3, 4), unhealthy=(4,)),
        WaitFor,
        "LearnersCatchingUp",
    ),
    Story(
        "scale up: both learners caught up: one joint reconfiguration from 3 to 5 voters",
        spec(replicas=5),
        world(learners=(3, 4)),
        Reconfigure(tuple(mid(k) for k in range(5))),
    ),
    Story(
        "scale up: done",
        spec(replicas=5),
        world(voters=range(5)),
        Done(),
    ),
    # --- scale down 5 -> 3 --------------------------------------------------------------
    Story(
        "scale down: one joint reconfiguration without the highest ordinals",
        spec(replicas=3),
        world(voters=range(5)),
        Reconfigure((mid(0), mid(1), mid(2))),
    ),
    Story(
        "scale down: a leader among the leaving moves leadership to a staying voter first",
        spec(replicas=3),
        world(voters=range(5), leader=4, lag={0: 20, 1: 3, 2: 3}),
        TransferLeadership(mid(1)),
    ),
    Story(
        "scale down: never to a configuration without a healthy majority",
        spec(replicas=3),
        world(voters=range(5), unhealthy=(1, 2)),
        WaitFor,
        "VotersUnhealthy",
    ),
    Story(
        "scale down: the member list no longer has pods 3 and 4, the StatefulSet shrinks",
        spec(replicas=3),
        world(sts=5, pvcs=[Pvc(k, mid(k)) for k in range(5)]),
        ScaleStatefulSet(3),
    ),
    Story(
        "scale down: the claims of removed members go when the policy says Delete",
        spec(replicas=3, pvc_retention="Delete"),
        world(pvcs=[Pvc(k, mid(k)) for k in range(5)]),
        DeletePvcs((3, 4)),
    ),
    Story(
        "scale down: ... but only once their pods are gone",
        spec(replicas=3, pvc_retention="Delete"),
        world(
            pods=[pod(k) for k in range(3)] + [pod(4, deleting=True)],
            pvcs=[Pvc(k, mid(k)) for k in range(5)],
        ),
        WaitFor,
        "PodsTerminating",
    ),
    Story(
        "scale down: and they stay when the policy says Retain",
        spec(replicas=3),
        world(pvcs=[Pvc(k, mid(k)) for k in range(5)]),
        Done(),
    ),
    Story(
        "scale down to one member",
        spec(replicas=1),
        world(),
        Reconfigure((mid(0),)),
    ),
    # --- the spec changes while an operation is in flight -------------------------------
    Story(
        "learners added, spec back to 3 before promotion: the learners leave",
        spec(replicas=3),
        world(learners=(3, 4), sts=5),
        RemoveMembers((mid(3), mid(4))),
    ),
    Story(
        "learners added, spec down to 4: only the learner beyond it leaves",
        spec(replicas=4),
        world(learners=(3, 4), sts=5),
        RemoveMembers((mid(4),)),
    ),
    Story(
        "... then the remaining learner is promoted (3 -> 4 voters in one step)",
        spec(replicas=4),
        world(learners=(3,), sts=5),
        Reconfigure(tuple(mid(k) for k in range(4))),
    ),
    Story(
        "... then the StatefulSet shrinks to 4",
        spec(replicas=4),
        world(voters=range(4), sts=5),
        ScaleStatefulSet(4),
    ),
    Story(
        "joint reconfiguration to 5 done, spec back to 3: scale down from where it stands",
        spec(replicas=3),
        world(voters=range(5), sts=5),
        Reconfigure((mid(0), mid(1), mid(2))),
    ),
    Story(
        "reconfigured to 3, StatefulSet still at 5, spec back to 5: old data is wiped first",
        spec(replicas=5),
        world(sts=5, pvcs=[Pvc(k, mid(k)) for k in range(5)]),
        DeletePvcs((3,)),
    ),
    Story(
        "... a claim being deleted under a pod with no member: the pod goes, to release it",
        spec(replicas=5),
        world(
            sts=5,
            pvcs=[Pvc(k, mid(k)) for k in range(3)]
            + [Pvc(3, mid(3), deleting=True), Pvc(4, mid(4), deleting=True)],
        ),
        DeletePod(3),
    ),
    Story(
        "... wait until the old claim is gone before the pod comes back",
        spec(replicas=5),
        world(
            sts=5,
            pods=[pod(k) for k in range(3)] + [pod(3, deleting=True), pod(4)],
            pvcs=[Pvc(k, mid(k)) for k in range(3)] + [Pvc(3, mid(3), deleting=True)],
        ),
        WaitFor,
        "ClaimDeleting",
    ),
    Story(
        "scale up onto claims a Retain policy kept: never reuse a removed member's data",
        spec(replicas=4),
        world(pvcs=[Pvc(k, mid(k)) for k in range(5)]),
        DeletePvcs((3,)),
    ),
    Story(
        "delete pending, nothing else in the way: wait for it, then add the learner",
        spec(replicas=4),
        world(pvcs=[Pvc(k, mid(k)) for k in range(3)] + [Pvc(3, mid(3), deleting=True)]),
        WaitFor,
        "ClaimDeleting",
    ),
    Story(
        "a joint configuration in force: wait for the cluster to leave it",
        spec(replicas=5),
        world(voters=range(5), joint=True),
        WaitFor,
        "JointConsensus",
    ),
    Story(
        "a stranger learner (not one of our pods) is removed",
        spec(),
        world(strangers=(Member(0xEE, None, "intruder", is_learner=True),)),
        RemoveMembers((0xEE,)),
    ),
    Story(
        "a stranger voter is reconfigured away",
        spec(),
        world(strangers=(Member(0xEE, None, "intruder"),)),
        Reconfigure((mid(0), mid(1), mid(2))),
    ),
    # --- upgrade 1.0 -> 1.1 -------------------------------------------------------------
    Story(
        "upgrade: the template changes first; no pod restarts by itself (OnDelete)",
        spec(version="1.1"),
        world(),
        UpdateTemplate(NEW_HASH),
    ),
    Story(
        "upgrade: followers first, highest ordinal first",
        spec(version="1.1"),
        world(template_hash=NEW_HASH),
        DeletePod(2),
    ),
    Story(
        "upgrade: the restarted pod is not back yet",
        spec(version="1.1"),
        world(template_hash=NEW_HASH, pods=[pod(0), pod(1), pod(2, deleting=True)]),
        WaitFor,
        "PodRestarting",
    ),
    Story(
        "upgrade: the restarted pod runs but is not Ready: wait",
        spec(version="1.1"),
        world(template_hash=NEW_HASH, pods_on={2: "1.1"}, unhealthy=(2,)),
        WaitFor,
        "PodRecovering",
    ),
    Story(
        "upgrade: Ready but still catching up: wait",
        spec(version="1.1"),
        world(template_hash=NEW_HASH, pods_on={2: "1.1"}, lag={2: 9000}),
        WaitFor,
        "PodRecovering",
    ),
    Story(
        "upgrade: caught up but the member does not report the new version: wait",
        spec(version="1.1"),
        world(template_hash=NEW_HASH, pods_on={2: "1.1"}, reports={2: "1.0"}),
        WaitFor,
        "PodRecovering",
    ),
    Story(
        "upgrade: the first pod is fine, the next follower",
        spec(version="1.1"),
        world(template_hash=NEW_HASH, pods_on={2: "1.1"}),
        DeletePod(1),
    ),
    Story(
        "upgrade: the leader is the only pod left: leadership moves to an upgraded voter",
        spec(version="1.1"),
        world(template_hash=NEW_HASH, pods_on={1: "1.1", 2: "1.1"}, lag={1: 7, 2: 2}),
        TransferLeadership(mid(2)),
    ),
    Story(
        "upgrade: the old leader, now a follower, restarts last",
        spec(version="1.1"),
        world(template_hash=NEW_HASH, pods_on={1: "1.1", 2: "1.1"}, leader=2),
        DeletePod(0),
    ),
    Story(
        "upgrade: done",
        spec(version="1.1"),
        world(template_hash=NEW_HASH, pods_on={0: "1.1", 1: "1.1", 2: "1.1"}),
        Done(),
    ),
    Story(
        "upgrade: a voter is down: no other voter is touched",
        spec(replicas=5, version="1.1"),
        world(voters=range(5), template_hash=NEW_HASH, unhealthy=(1, 3)),
        WaitFor,
        "VotersUnhealthy",
    ),
    Story(
        "upgrade: an old pod that is already down is restarted first (costs no availability)",
        spec(version="1.1"),
        world(template_hash=NEW_HASH, unhealthy=(1,)),
        DeletePod(1),
    ),
    Story(
        "upgrade: a voter far behind counts as unhealthy too",
        spec(version="1.1"),
        world(template_hash=NEW_HASH, lag={1: 50_000}),
        WaitFor,
        "VotersUnhealthy",
    ),
    Story(
        "upgrade: the new version does not come up in time: the rollout stops, Degraded",
        spec(version="1.1"),
        world(
            template_hash=NEW_HASH, pods_on={2: "1.1"}, unhealthy=(2,), now=NOW + ROLLOUT_TIMEOUT_S
        ),
        RolloutHalted,
    ),
    Story(
        "upgrade of a single member: no one to hand leadership to, it restarts in place",
        spec(replicas=1, version="1.1"),
        world(voters=(0,), template_hash=NEW_HASH),
        DeletePod(0),
    ),
    Story(
        "a change that is not a version (resources) rolls the same way",
        spec(version="1.0", config_hash="h3-more-memory"),
        world(template_hash="h3-more-memory"),
        DeletePod(2),
    ),
    # --- repair -------------------------------------------------------------------------
    Story(
        "a pod restarted with its data rejoins by itself: nothing to do",
        spec(),
        world(unhealthy=(1,), pods=[pod(0), pod(1, ready=False, created_at=NOW - 10), pod(2)]),
        Done(),
    ),
    Story(
        "a voter's claim is gone: it is replaced as a new member",
        spec(),
        world(unhealthy=(1,), pvcs=(Pvc(0, mid(0)), Pvc(2, mid(2)))),
        ReplaceMember(1, mid(1)),
    ),
    Story(
        "a voter's claim is being deleted: replaced too",
        spec(),
        world(unhealthy=(1,), pvcs=(Pvc(0, mid(0)), Pvc(1, mid(1), deleting=True), Pvc(2, mid(2)))),
        ReplaceMember(1, mid(1)),
    ),
    Story(
        "a claim recreated empty under a voter that does not come back: replaced",
        spec(),
        world(
            unhealthy=(1,),
            pvcs=(Pvc(0, mid(0)), Pvc(1), Pvc(2, mid(2))),
            now=NOW - 3600 + REPAIR_GRACE_S + 1,
        ),
        ReplaceMember(1, mid(1), wipe=True),
    ),
    Story(
        "... but not before the grace period: it may still be starting",
        spec(),
        world(
            unhealthy=(1,),
            pods=[pod(0), pod(1, ready=False, created_at=NOW - 60), pod(2)],
            pvcs=(Pvc(0, mid(0)), Pvc(1), Pvc(2, mid(2))),
        ),
        Done(),
    ),
    Story(
        "replacement removed the old member: its data on the claim is wiped",
        spec(),
        world(voters=(0, 2), sts=3, pvcs=(Pvc(0, mid(0)), Pvc(1, mid(1)), Pvc(2, mid(2)))),
        DeletePvcs((1,)),
    ),
    Story(
        "... the claim is held by the old pod: the pod goes",
        spec(),
        world(
            voters=(0, 2),
            sts=3,
            pvcs=(Pvc(0, mid(0)), Pvc(1, mid(1), deleting=True), Pvc(2, mid(2))),
        ),
        DeletePod(1),
    ),
    Story(
        "... no learner is added while the old claim is still there",
        spec(),
        world(
            voters=(0, 2),
            sts=3,
            pods=[pod(0), pod(1, deleting=True), pod(2)],
            pvcs=(Pvc(0, mid(0)), Pvc(1, mid(1), deleting=True), Pvc(2, mid(2))),
        ),
        WaitFor,
        "ClaimDeleting",
    ),
    Story(
        "... on a fresh claim, the pod is added back as a new learner",
        spec(),
        world(voters=(0, 2), sts=3, pvcs=(Pvc(0, mid(0)), Pvc(1), Pvc(2, mid(2)))),
        AddLearner(1),
    ),
    Story(
        "... the new pod on a fresh claim joins as the learner and is bound",
        spec(),
        world(learners=(1,), ids={1: NEW_ID}, pvcs=(Pvc(0, mid(0)), Pvc(1), Pvc(2, mid(2)))),
        BindPvc(1, NEW_ID),
    ),
    Story(
        "... caught up: promoted back to three voters",
        spec(),
        world(learners=(1,), ids={1: NEW_ID}),
        Reconfigure(tuple(sorted((mid(0), NEW_ID, mid(2))))),
    ),
    Story(
        "a replacement that would leave no healthy majority is not made",
        spec(),
        world(unhealthy=(1, 2), pvcs=(Pvc(0, mid(0)), Pvc(2, mid(2)))),
        WaitFor,
        "ReplacementUnsafe",
    ),
    # --- quorum -------------------------------------------------------------------------
    Story(
        "two of three voters down and no leader: reported, never fixed by discarding data",
        spec(),
        world(leader=None, unhealthy=(1, 2)),
        ReportQuorumLost,
    ),
    Story(
        "no member answers at all",
        spec(),
        world(cluster=False),
        ReportQuorumLost,
    ),
    Story(
        "quorum lost and a claim lost: still only reported",
        spec(),
        world(leader=None, unhealthy=(1, 2), pvcs=(Pvc(0, mid(0)),)),
        ReportQuorumLost,
    ),
    Story(
        "quorum lost during a scale-up: nothing moves",
        spec(replicas=5),
        world(leader=None, unhealthy=(0, 1)),
        ReportQuorumLost,
    ),
]


@pytest.mark.parametrize("story", STORIES, ids=str)
def test_story(story: Story) -> None:
    step = plan(story.spec, story.world)
    if isinstance(story.step, type):
        assert isinstance(step, story.step), f"{story.title}: got {step}"
        if story.why:
            assert isinstance(step, WaitFor) and step.why == story.why, step
    else:
        assert step == story.step, f"{story.title}: got {step}"
    assert step.message  # every step can be told to a person


@pytest.mark.parametrize("story", STORIES, ids=str)
def test_a_restarted_operator_takes_the_same_step(story: Story) -> None:
    """Nothing in memory, nothing from status: the same world gives the same step."""
    first = plan(story.spec, story.world)
    stale = Operation("ScaleUp", "7", "AddingLearner", "2020-01-01T00:00:00Z", "old news")
    again = plan(story.spec, replace(story.world, operation=stale))
    assert first == again


def test_story_titles_are_unique() -> None:
    titles = [s.title for s in STORIES]
    assert len(titles) == len(set(titles))


def test_scale_up_waits_for_learners_never_promotes_one_at_a_time() -> None:
    """3 -> 5 is one joint step: with one learner ready and the other not, nothing moves."""
    step = plan(spec(replicas=5), world(learners=(3, 4), lag={3: 0, 4: 5000}))
    assert isinstance(step, WaitFor)
    assert "db-4" in step.message and "db-3" not in step.message


def test_quorum_lost_message_names_the_missing_voters() -> None:
    step = plan(spec(), world(leader=None, unhealthy=(1, 2)))
    assert isinstance(step, ReportQuorumLost)
    assert "1 of 3 voters healthy" in step.message
    assert "db-1" in step.message and "db-2" in step.message


def test_rollout_halted_names_the_pod_and_the_image() -> None:
    step = plan(
        spec(version="1.1"),
        world(template_hash=NEW_HASH, pods_on={2: "1.1"}, unhealthy=(2,), now=NOW + 3600),
    )
    assert isinstance(step, RolloutHalted)
    assert step.ordinal == 2
    assert "db-2" in step.message and "flotilla/node:1.1" in step.message


def test_a_new_version_that_crashes_halts_the_rollout_at_once() -> None:
    """Pod 2 restarted onto 1.1 and its process exited twice: no other pod is touched."""
    crashing = pod(2, ready=False, version="1.1", config_hash=NEW_HASH, created_at=NOW - 30)
    pods = [pod(0), pod(1), replace(crashing, restarts=ROLLOUT_CRASHES)]
    step = plan(
        spec(version="1.1"),
        world(template_hash=NEW_HASH, pods_on={2: "1.1"}, unhealthy=(2,), pods=pods),
    )
    assert isinstance(step, RolloutHalted)
    assert step.ordinal == 2 and "exited 2 times" in step.message
    # One exit is not yet a verdict (a slow first start may be killed once).
    pods[2] = replace(crashing, restarts=1)
    step = plan(
        spec(version="1.1"),
        world(template_hash=NEW_HASH, pods_on={2: "1.1"}, unhealthy=(2,), pods=pods),
    )
    assert isinstance(step, WaitFor) and step.why == "PodRecovering"


def test_setting_the_version_back_restarts_the_crashed_pod_first() -> None:
    """Back on 1.0, the pod stuck on 1.1 is the only outdated one, and it is down."""
    crashing = pod(2, ready=False, version="1.1", config_hash=NEW_HASH, restarts=3)
    step = plan(
        spec(version="1.0"),
        world(pods_on={2: "1.1"}, unhealthy=(2,), pods=[pod(0), pod(1), crashing]),
    )
    assert step == DeletePod(2)
