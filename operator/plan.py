"""The planner: desired spec and observed world in, the one next step out.

``plan`` is a pure function (DESIGN.md, principles 1 and 3). It keeps no progress anywhere:
every half-finished operation is recognised from the world itself (a learner that is not in
the spec any more, a StatefulSet larger than the voter set, a claim that holds a removed
member's data), so a restarted operator continues exactly where the last one stopped, and a
spec that changes mid-operation is followed from the next safe point.

The checks run in the order that keeps quorum safe, each one a small function that either
returns the step to take (possibly a wait) or passes:

1. our Kubernetes objects exist;                    6. learners the spec dropped are removed;
2. a leader exists (else: bootstrapping, or quorum  7. missing members join as learners, then
   lost, which is reported and never "fixed");          the StatefulSet grows to hold them;
3. no joint configuration is in force;              8. one joint reconfiguration to the voter
4. the pod template matches the spec;                  set of the spec (leader moved off first);
5. repair: claims are bound, members whose data     9. the StatefulSet shrinks, released claims
   was lost are replaced, stale data is wiped;         are deleted (if the policy says so);
                                                   10. pods on an old configuration are rolled.

Membership first, pods second: a pod is only created for a member that exists, and a member
is only removed from the StatefulSet once the member list no longer has it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import ClassVar

from .model import DELETE, Cluster, Member, Observed, Pod, Spec, pod_name

# A learner is promoted, and a restarted member counts as recovered, when its match index is
# within this many entries of the leader's last index (the node's own learner check).
CATCH_UP_LAG = 1000
# A pod running the new configuration that is still not Ready this long after it was
# created stops the rollout: the new version is failing, and a person must look.
ROLLOUT_TIMEOUT_S = 600.0
# ... and so does one whose process has exited this many times and is not Ready: a version
# that crashes on start will not come up by waiting ten minutes.
ROLLOUT_CRASHES = 2
# A member still down this long after its pod started, on a claim never bound to it, cannot
# start on what the claim holds (recreated empty, or a removed member's data): it is
# replaced by a new member on a wiped claim.
REPAIR_GRACE_S = 300.0


# --- steps -------------------------------------------------------------------------------


class Step:
    """One thing to do. Subclasses are values: equal steps mean the same action."""

    reason: ClassVar[str] = ""

    @property
    def message(self) -> str:
        return self.reason


@dataclass(frozen=True)
class CreateResources(Step):
    """Create the objects in ``kinds`` that are missing and restore those that drifted.

    A new StatefulSet gets ``replicas`` pods started with ``initial_cluster_state``: "new"
    when no data exists yet (bootstrap), "existing" when claims are already there.
    """

    kinds: tuple[str, ...]
    replicas: int
    initial_cluster_state: str = "new"
    reason: ClassVar[str] = "CreatingResources"

    @property
    def message(self) -> str:
        return f"creating or restoring {', '.join(self.kinds)}"


@dataclass(frozen=True)
class WaitFor(Step):
    """Nothing is safe to do now; the next event or timer looks again."""

    why: str
    detail: str = ""

    @property
    def message(self) -> str:
        return self.detail or self.why


@dataclass(frozen=True)
class UpdateTemplate(Step):
    """Patch the StatefulSet's pod template to the spec. No pod restarts (OnDelete)."""

    config_hash: str
    initial_cluster_state: str = "existing"
    reason: ClassVar[str] = "UpdatingTemplate"

    @property
    def message(self) -> str:
        return f"pod template to configuration {self.config_hash}, joining as existing"


@dataclass(frozen=True)
class BindPvc(Step):
    """Record on the claim of ``ordinal`` that it holds the data of ``member_id``."""

    ordinal: int
    member_id: int
    reason: ClassVar[str] = "BindingClaim"

    @property
    def message(self) -> str:
        return f"claim of pod {self.ordinal} holds member {self.member_id:x}"


@dataclass(frozen=True)
class AddLearner(Step):
    """MemberAdd(isLearner) with the peer URL of pod ``ordinal``, before the pod exists."""

    ordinal: int
    reason: ClassVar[str] = "AddingLearner"

    @property
    def message(self) -> str:
        return f"adding pod {self.ordinal} as a learner"


@dataclass(frozen=True)
class Reconfigure(Step):
    """One joint-consensus transition to exactly these voters and learners (member ids)."""

    voters: tuple[int, ...]
    learners: tuple[int, ...] = ()
    reason: ClassVar[str] = "Reconfiguring"

    @property
    def message(self) -> str:
        return f"joint reconfiguration to {len(self.voters)} voters"


@dataclass(frozen=True)
class TransferLeadership(Step):
    """Move leadership to member ``to`` before its current holder is removed or restarted."""

    to: int
    reason: ClassVar[str] = "TransferringLeadership"

    @property
    def message(self) -> str:
        return f"moving leadership to member {self.to:x}"


@dataclass(frozen=True)
class RemoveMembers(Step):
    """MemberRemove for each id: learners the spec no longer wants, or strangers."""

    ids: tuple[int, ...]
    reason: ClassVar[str] = "RemovingMembers"

    @property
    def message(self) -> str:
        return "removing members " + ", ".join(f"{i:x}" for i in self.ids)


@dataclass(frozen=True)
class ScaleStatefulSet(Step):
    replicas: int
    reason: ClassVar[str] = "ScalingStatefulSet"

    @property
    def message(self) -> str:
        return f"StatefulSet to {self.replicas} pods"


@dataclass(frozen=True)
class DeletePvcs(Step):
    ordinals: tuple[int, ...]
    reason: ClassVar[str] = "DeletingClaims"

    @property
    def message(self) -> str:
        return "deleting the claims of pods " + ", ".join(map(str, self.ordinals))


@dataclass(frozen=True)
class DeletePod(Step):
    """Delete one pod; the StatefulSet recreates it from the current template."""

    ordinal: int
    reason: ClassVar[str] = "RestartingPod"

    @property
    def message(self) -> str:
        return f"restarting pod {self.ordinal}"


@dataclass(frozen=True)
class ReplaceMember(Step):
    """Remove ``member_id``; pod ``ordinal`` comes back later as a new learner.

    For a member whose data is gone, or that cannot start on what its claim holds. With
    ``wipe`` the claim is deleted in the same step: it may hold data of a member that no
    longer exists, and no label says so. The new learner is added by a later pass, once the
    pod's claim is clean, so that no process ever joins under the new identity on data that
    is about to be wiped.
    """

    ordinal: int
    member_id: int
    wipe: bool = False
    reason: ClassVar[str] = "ReplacingMember"

    @property
    def message(self) -> str:
        what = "lost its data" if not self.wipe else "does not come up on its claim"
        return f"pod {self.ordinal} {what}: replacing member {self.member_id:x}"


@dataclass(frozen=True)
class ReportQuorumLost(Step):
    """No leader. Said loudly; data is never discarded to get one back."""

    detail: str
    reason: ClassVar[str] = "QuorumLost"

    @property
    def message(self) -> str:
        return self.detail


@dataclass(frozen=True)
class RolloutHalted(Step):
    """A pod on the new configuration does not come up: the rollout stops there."""

    ordinal: int
    detail: str
    reason: ClassVar[str] = "RolloutHalted"

    @property
    def message(self) -> str:
        return self.detail


@dataclass(frozen=True)
class Done(Step):
    """The world matches the spec; only status is written."""

    reason: ClassVar[str] = "Reconciled"

    @property
    def message(self) -> str:
        return "the cluster matches the spec"


# --- the planner -------------------------------------------------------------------------


def plan(spec: Spec, observed: Observed) -> Step:
    """The one next step toward ``spec`` from ``observed``."""
    created = _resources(spec, observed)
    if created is not None:
        return created
    assert observed.statefulset is not None
    cluster = observed.cluster
    if cluster is None or not cluster.has_quorum:
        return _no_leader(spec, observed, cluster)
    if cluster.joint:
        return WaitFor("JointConsensus", "a joint configuration is being left")
    cluster = _distrust(cluster, observed)
    checks: tuple[Callable[[Spec, Observed, Cluster], Step | None], ...] = (
        _template,
        _bind_claims,
        _replace_lost,
        _wipe_stale,
        _drop_learners,
        _add_members,
        _grow,
        _reconfigure,
        _shrink,
        _release_claims,
        _rollout,
    )
    for check in checks:
        step = check(spec, observed, cluster)
        if step is not None:
            return step
    return Done()


def _resources(spec: Spec, observed: Observed) -> Step | None:
    kinds = set(observed.missing)
    if observed.statefulset is None:
        kinds.add("statefulset")
    if not kinds:
        return None
    state = "existing" if observed.pvcs or observed.cluster is not None else "new"
    return CreateResources(tuple(sorted(kinds)), spec.replicas, state)


def _no_leader(spec: Spec, observed: Observed, cluster: Cluster | None) -> Step:
    assert observed.statefulset is not None
    if observed.statefulset.initial_cluster_state == "new":
        ready = sum(1 for p in observed.pods if p.ready)
        return WaitFor(
            "Bootstrapping", f"waiting for the first members to elect a leader ({ready} ready)"
        )
    if cluster is None:
        return ReportQuorumLost("no member answers; the cluster has no quorum")
    voters = cluster.voters
    healthy = [m for m in voters if m.healthy]
    return ReportQuorumLost(
        f"no leader: {len(healthy)} of {len(voters)} voters healthy, "
        f"{len(voters) // 2 + 1} needed; unhealthy: {_names(m for m in voters if not m.healthy)}"
    )


def _template(spec: Spec, observed: Observed, cluster: Cluster) -> Step | None:
    """Once a leader exists, every pod created later (scale-up, replacement) must join."""
    sts = observed.statefulset
    assert sts is not None
    if sts.config_hash != spec.config_hash or sts.initial_cluster_state != "existing":
        return UpdateTemplate(spec.config_hash)
    return None


def _bind_claims(spec: Spec, observed: Observed, cluster: Cluster) -> Step | None:
    for m in sorted(cluster.members, key=_by_ordinal):
        if m.ordinal is None or not m.healthy:
            continue
        pod, pvc = observed.pod(m.ordinal), observed.pvc(m.ordinal)
        ready = pod is not None and pod.ready
        if ready and pvc is not None and not pvc.deleting and pvc.member_id is None:
            return BindPvc(m.ordinal, m.id)
    return None


def _replace_lost(spec: Spec, observed: Observed, cluster: Cluster) -> Step | None:
    """A member whose data is gone must never come back under its old identity."""
    for m in sorted(cluster.members, key=_by_ordinal):
        if m.ordinal is None or m.healthy:
            continue
        stuck = _stuck(m, observed)
        if not stuck and not _data_lost(m, observed):
            continue
        if not m.is_learner:
            staying = [v for v in cluster.voters if v.id != m.id]
            healthy = sum(1 for v in staying if v.healthy)
            if healthy < len(staying) // 2 + 1:
                return WaitFor(
                    "ReplacementUnsafe",
                    f"{_name(m)} lost its data, but removing it would leave "
                    f"{healthy} of {len(staying)} voters healthy",
                )
        return ReplaceMember(m.ordinal, m.id, wipe=stuck)
    return None


def _data_lost(m: Member, observed: Observed) -> bool:
    """The claim that held the member's data is gone, going, or holds another's."""
    assert m.ordinal is not None
    pvc = observed.pvc(m.ordinal)
    if m.is_learner:
        # A learner's claim does not exist until the StatefulSet grows to hold it, and after
        # a replacement it still carries the old member's data until it is wiped: only a
        # claim that was its own and is going away says that its data is lost.
        return pvc is not None and pvc.member_id == m.id and pvc.deleting
    if pvc is None or pvc.deleting:
        return True
    return pvc.member_id is not None and pvc.member_id != m.id


def _stuck(m: Member, observed: Observed) -> bool:
    """Long after its pod started, the member is still down on a claim never bound to it.

    Either the claim was recreated empty under a voter before we saw it missing, or it holds
    data of a member removed before its claim was bound. Both need a new member on a wiped
    claim; waiting longer would not help.
    """
    assert m.ordinal is not None
    pvc, pod = observed.pvc(m.ordinal), observed.pod(m.ordinal)
    return (
        pvc is not None
        and pvc.member_id is None
        and not pvc.deleting
        and pod is not None
        and pod.phase == "Running"
        and observed.now - pod.created_at > REPAIR_GRACE_S
    )


def _wipe_stale(spec: Spec, observed: Observed, cluster: Cluster) -> Step | None:
    """Claims holding data of members that no longer exist are wiped before reuse."""
    for k in range(spec.replicas):
        pvc, pod = observed.pvc(k), observed.pod(k)
        if pvc is None:
            continue
        orphaned = pvc.member_id is not None and cluster.by_id(pvc.member_id) is None
        if orphaned and not pvc.deleting:
            return DeletePvcs((k,))
        if not pvc.deleting:
            continue
        if pod is None or pod.deleting:
            # A pod created now would be bound to the dying claim: let it go first.
            return WaitFor("ClaimDeleting", f"waiting for the old claim of pod {k} to go")
        owner = cluster.at(k)
        if owner is None or not owner.healthy:
            # The claim is held until its pod goes; the new pod gets a fresh one.
            return DeletePod(k)
    return None


def _drop_learners(spec: Spec, observed: Observed, cluster: Cluster) -> Step | None:
    """Learners beyond the spec (it shrank while they were catching up) leave first."""
    extra = [
        m.id
        for m in cluster.learners
        if m.ordinal is None or m.ordinal >= spec.replicas or _duplicate(m, cluster)
    ]
    return RemoveMembers(tuple(sorted(extra))) if extra else None


def _duplicate(m: Member, cluster: Cluster) -> bool:
    """A learner that shares its pod with another member: left over from a replacement."""
    return any(o.id != m.id and o.ordinal == m.ordinal for o in cluster.members)


def _add_members(spec: Spec, observed: Observed, cluster: Cluster) -> Step | None:
    for k in range(spec.replicas):
        if cluster.at(k) is None:
            return AddLearner(k)
    return None


def _grow(spec: Spec, observed: Observed, cluster: Cluster) -> Step | None:
    sts = observed.statefulset
    assert sts is not None
    if sts.replicas < spec.replicas:
        return ScaleStatefulSet(spec.replicas)
    return None


def _reconfigure(spec: Spec, observed: Observed, cluster: Cluster) -> Step | None:
    """One joint transition to the members of pods 0..replicas-1 as the voters."""
    target: dict[int, Member] = {}
    for k in range(spec.replicas):
        m = cluster.at(k)
        assert m is not None  # _add_members
        target[m.id] = m
    current = {m.id: m for m in cluster.voters}
    if set(target) == set(current):
        return None
    behind = [m for i, m in target.items() if i not in current and not _caught_up(m)]
    if behind:
        return WaitFor("LearnersCatchingUp", f"waiting for {_names(behind)} to catch up")
    leaving = [m for i, m in current.items() if i not in target]
    leader = cluster.leader
    assert leader is not None
    staying = [m for i, m in current.items() if i in target]
    if leader.id in (m.id for m in leaving) and staying:
        successor = _successor(staying)
        if successor is None:
            return WaitFor("NoSuccessor", "no healthy voter can take over leadership")
        return TransferLeadership(successor.id)
    # With no voter staying at all (every voter of the target is a promoted learner), the
    # leader cannot hand over beforehand: the Raft core hands over once C_new commits.
    for name, voters in (("current", current.values()), ("new", target.values())):
        members = list(voters)
        healthy = sum(1 for m in members if m.healthy)
        if healthy < len(members) // 2 + 1:
            return WaitFor(
                "VotersUnhealthy",
                f"the {name} configuration has {healthy} of {len(members)} voters healthy",
            )
    return Reconfigure(tuple(sorted(target)))


def _shrink(spec: Spec, observed: Observed, cluster: Cluster) -> Step | None:
    sts = observed.statefulset
    assert sts is not None
    if sts.replicas <= spec.replicas:
        return None
    beyond = [m for m in cluster.members if m.ordinal is not None and m.ordinal >= spec.replicas]
    if beyond:  # not reachable after _drop_learners and _reconfigure; kept as the safety net
        return WaitFor("MembersRemaining", f"{_names(beyond)} still in the member list")
    return ScaleStatefulSet(spec.replicas)


def _release_claims(spec: Spec, observed: Observed, cluster: Cluster) -> Step | None:
    if spec.pvc_retention != DELETE:
        return None
    released = [p.ordinal for p in observed.pvcs if p.ordinal >= spec.replicas and not p.deleting]
    if not released:
        return None
    if any(p.ordinal >= spec.replicas for p in observed.pods):
        return WaitFor("PodsTerminating", "waiting for removed pods to terminate")
    return DeletePvcs(tuple(sorted(released)))


def _rollout(spec: Spec, observed: Observed, cluster: Cluster) -> Step | None:
    """Restart pods on an old configuration one at a time, followers first, leader last."""
    pods = [p for p in observed.pods if p.ordinal < spec.replicas]
    outdated = [p for p in pods if p.config_hash != spec.config_hash]
    if not outdated:
        return None
    gone = [k for k in range(spec.replicas) if observed.pod(k) is None]
    gone += [p.ordinal for p in pods if p.deleting]
    if gone:
        return WaitFor("PodRestarting", f"waiting for pod {min(gone)} to come back")
    for p in pods:
        if p.config_hash != spec.config_hash or _pod_recovered(p, spec, cluster):
            continue
        if not p.ready and p.restarts >= ROLLOUT_CRASHES:
            return RolloutHalted(
                p.ordinal,
                f"pod {pod_name(spec.name, p.ordinal)} on {spec.image_ref} exited "
                f"{p.restarts} times and is not Ready; the rollout is stopped "
                f"(set the previous version back to recover)",
            )
        if not p.ready and observed.now - p.created_at > ROLLOUT_TIMEOUT_S:
            minutes = int((observed.now - p.created_at) // 60)
            return RolloutHalted(
                p.ordinal,
                f"pod {pod_name(spec.name, p.ordinal)} on {spec.image_ref} is not Ready after "
                f"{minutes} minutes; the rollout is stopped",
            )
        return WaitFor(
            "PodRecovering",
            f"waiting for pod {p.ordinal} to be Ready, caught up and on {spec.version}",
        )
    leader = cluster.leader
    assert leader is not None
    # Already-down pods first (restarting them costs nothing), then followers from the
    # highest ordinal, the leader last.
    order = sorted(
        outdated,
        key=lambda p: (
            p.ordinal == leader.ordinal,
            _member_healthy(cluster, p.ordinal),
            -p.ordinal,
        ),
    )
    candidate = order[0]
    others = [m for m in cluster.voters if m.ordinal != candidate.ordinal]
    sick = [m for m in others if not _caught_up(m)]
    if sick:
        return WaitFor("VotersUnhealthy", f"not restarting a pod while {_names(sick)} is down")
    if candidate.ordinal == leader.ordinal and others:
        updated = {p.ordinal for p in pods if p.config_hash == spec.config_hash}
        successor = _successor(m for m in others if m.ordinal in updated) or _successor(others)
        if successor is None:
            return WaitFor("NoSuccessor", "no healthy voter can take over leadership")
        return TransferLeadership(successor.id)
    return DeletePod(candidate.ordinal)


# --- helpers -----------------------------------------------------------------------------


def _distrust(cluster: Cluster, observed: Observed) -> Cluster:
    """A member whose pod or claim is gone or going is not healthy, whatever it last said.

    The member list and the Kubernetes objects are read at slightly different moments; when
    they disagree, the planner believes the one that counts fewer healthy voters.
    """

    def alive(m: Member) -> bool:
        if m.ordinal is None:
            return m.healthy
        pod, pvc = observed.pod(m.ordinal), observed.pvc(m.ordinal)
        return (
            m.healthy
            and pod is not None
            and not pod.deleting
            and pvc is not None
            and not pvc.deleting
        )

    members = tuple(m if alive(m) else replace(m, healthy=False) for m in cluster.members)
    return replace(cluster, members=members)


def _by_ordinal(m: Member) -> tuple[int, int]:
    return (m.ordinal if m.ordinal is not None else 1 << 30, m.id)


def _name(m: Member) -> str:
    return m.name or (f"pod {m.ordinal}" if m.ordinal is not None else f"member {m.id:x}")


def _names(members: Iterable[Member]) -> str:
    return ", ".join(_name(m) for m in members) or "none"


def _caught_up(m: Member) -> bool:
    return m.healthy and m.lag is not None and m.lag <= CATCH_UP_LAG


def _successor(candidates: Iterable[Member]) -> Member | None:
    """The most caught-up healthy voter (lowest ordinal on a tie)."""
    ok = [m for m in candidates if _caught_up(m) and not m.is_learner]
    if not ok:
        return None
    return min(ok, key=lambda m: (m.lag or 0, -m.applied_index, *_by_ordinal(m)))


def _member_healthy(cluster: Cluster, ordinal: int) -> bool:
    m = cluster.at(ordinal)
    return m is not None and m.healthy


def _same_version(reported: str, wanted: str) -> bool:
    return reported == "" or reported.lstrip("v") == wanted.lstrip("v")


def _pod_recovered(p: Pod, spec: Spec, cluster: Cluster) -> bool:
    """Ready, a healthy member that has caught up, and reporting the spec's version."""
    m = cluster.at(p.ordinal)
    return p.ready and m is not None and _caught_up(m) and _same_version(m.version, spec.version)
