"""What ``status`` says, derived purely from the spec, the observed world and the step.

Conditions follow the Kubernetes convention (type, status, reason, message,
lastTransitionTime, observedGeneration): ``Available`` (a quorum serves requests),
``Progressing`` (an operation is under way), ``Degraded`` (something needs attention).
The phase is the one word ``kubectl get raftclusters`` shows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .model import Cluster, Observed, Spec
from .plan import (
    CreateResources,
    Done,
    ReplaceMember,
    ReportQuorumLost,
    RolloutHalted,
    Step,
    UpdateTemplate,
    WaitFor,
)
from .resources import label_selector

TRUE, FALSE = "True", "False"

# Operation types, as status.operation.type and the Progressing reason.
CREATE, BOOTSTRAP, SCALE_UP, SCALE_DOWN, UPGRADE, REPAIR = (
    "Create",
    "Bootstrap",
    "ScaleUp",
    "ScaleDown",
    "Upgrade",
    "Repair",
)
ALARM_RAISED = "AlarmRaised"
"""The Degraded reason while a member alarm (NOSPACE, CORRUPT) is raised in the cluster."""

_PROGRESSING_REASON = {
    CREATE: "Creating",
    BOOTSTRAP: "Bootstrapping",
    SCALE_UP: "ScalingUp",
    SCALE_DOWN: "ScalingDown",
    UPGRADE: "Upgrading",
    REPAIR: "Repairing",
}


@dataclass(frozen=True)
class Condition:
    type: str
    status: str
    reason: str
    message: str = ""


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _bootstrapping(step: Step) -> bool:
    return isinstance(step, WaitFor) and step.why == "Bootstrapping"


def operation_type(spec: Spec, observed: Observed, step: Step) -> str | None:
    """What the cluster is in the middle of, judged from the world (None: nothing)."""
    if isinstance(step, Done | ReportQuorumLost | RolloutHalted):
        return None
    if isinstance(step, CreateResources):
        return CREATE if observed.statefulset is None else REPAIR
    if _bootstrapping(step):
        return BOOTSTRAP
    if isinstance(step, ReplaceMember):
        return REPAIR
    if isinstance(step, UpdateTemplate) and step.config_hash == _template_hash(observed):
        return BOOTSTRAP  # only the join mode changes: the first members formed the cluster
    cluster = observed.cluster
    sts = observed.statefulset.replicas if observed.statefulset else 0
    members = cluster.members if cluster else ()
    voters = len(cluster.voters) if cluster else 0
    beyond = any(m.ordinal is None or m.ordinal >= spec.replicas for m in members)
    if beyond or sts > spec.replicas or voters > spec.replicas:
        return SCALE_DOWN
    if voters < spec.replicas or sts < spec.replicas:
        return SCALE_UP
    pods = [p for p in observed.pods if p.ordinal < spec.replicas]
    if isinstance(step, UpdateTemplate) or any(p.config_hash != spec.config_hash for p in pods):
        return UPGRADE
    return REPAIR


def _template_hash(observed: Observed) -> str:
    return observed.statefulset.config_hash if observed.statefulset else ""


def _health(cluster: Cluster | None) -> tuple[int, int]:
    if cluster is None:
        return 0, 0
    return sum(1 for m in cluster.voters if m.healthy), len(cluster.voters)


def conditions(spec: Spec, observed: Observed, step: Step) -> list[Condition]:
    cluster = observed.cluster
    healthy, voters = _health(cluster)
    if cluster is not None and cluster.has_quorum:
        leader = cluster.leader
        assert leader is not None
        available = Condition(
            "Available",
            TRUE,
            "QuorumAvailable",
            f"leader {leader.name or f'{leader.id:x}'}; {healthy} of {voters} voters healthy",
        )
    elif _bootstrapping(step) or isinstance(step, CreateResources):
        available = Condition("Available", FALSE, "Bootstrapping", step.message)
    else:
        available = Condition("Available", FALSE, "QuorumLost", step.message)

    op = operation_type(spec, observed, step)
    if op is not None:
        progressing = Condition("Progressing", TRUE, _PROGRESSING_REASON[op], step.message)
    elif isinstance(step, RolloutHalted | ReportQuorumLost):
        progressing = Condition("Progressing", FALSE, step.reason, step.message)
    else:
        progressing = Condition("Progressing", FALSE, "Reconciled", step.message)

    unhealthy = [m for m in cluster.members if not m.healthy] if cluster else []
    not_ready = [p for p in observed.pods if not p.ready and not p.deleting]
    if isinstance(step, ReportQuorumLost | RolloutHalted):
        degraded = Condition("Degraded", TRUE, step.reason, step.message)
    elif cluster is not None and cluster.alarms:
        degraded = Condition("Degraded", TRUE, ALARM_RAISED, alarm_message(cluster))
    elif unhealthy and available.status == TRUE:
        names = ", ".join(m.name or f"{m.id:x}" for m in unhealthy)
        degraded = Condition("Degraded", TRUE, "MembersUnhealthy", f"unhealthy: {names}")
    elif not_ready and op is None:
        names = ", ".join(f"{spec.name}-{p.ordinal}" for p in not_ready)
        degraded = Condition("Degraded", TRUE, "PodsNotReady", f"not ready: {names}")
    else:
        degraded = Condition("Degraded", FALSE, "Healthy", "")
    return [available, progressing, degraded]


def alarm_message(cluster: Cluster) -> str:
    """The cluster's alarms for people: what each one stops, and for which member."""
    stops = {
        "NOSPACE": "writes that add data are refused until space is freed and it is disarmed",
        "CORRUPT": "every write is refused until the member is replaced and it is disarmed",
    }
    parts = []
    for member_id, alarm in sorted(cluster.alarms):
        m = cluster.by_id(member_id)
        who = m.name if m is not None and m.name else f"{member_id:x}"
        stopped = stops.get(alarm, "see etcdctl alarm list")
        parts.append(f"{alarm} raised for member {who}: {stopped}")
    return "; ".join(parts)


def phase(spec: Spec, observed: Observed, step: Step) -> str:
    if isinstance(step, ReportQuorumLost):
        return "QuorumLost"
    if isinstance(step, RolloutHalted):
        return "Degraded"
    op = operation_type(spec, observed, step)
    if op is not None:
        return {
            CREATE: "Creating",
            BOOTSTRAP: "Bootstrapping",
            SCALE_UP: "Scaling",
            SCALE_DOWN: "Scaling",
            UPGRADE: "Upgrading",
            REPAIR: "Repairing",
        }[op]
    degraded = next(c for c in conditions(spec, observed, step) if c.type == "Degraded")
    return "Degraded" if degraded.status == TRUE else "Running"


def merge_conditions(
    previous: Sequence[Mapping[str, Any]], new: Sequence[Condition], now: str, generation: int
) -> list[dict[str, Any]]:
    """Kubernetes-shaped conditions; ``lastTransitionTime`` moves only when status does."""
    before = {c.get("type"): c for c in previous}
    out = []
    for c in new:
        old = before.get(c.type) or {}
        changed = old.get("status") != c.status
        out.append(
            {
                "type": c.type,
                "status": c.status,
                "reason": c.reason,
                "message": c.message,
                "lastTransitionTime": now if changed else old.get("lastTransitionTime", now),
                "observedGeneration": generation,
            }
        )
    return out


def operation(spec: Spec, observed: Observed, step: Step, now: str) -> dict[str, str] | None:
    op = operation_type(spec, observed, step)
    if op is None:
        return None
    target = spec.version if op == UPGRADE else str(spec.replicas)
    prev = observed.operation
    same = prev is not None and prev.type == op and prev.target == target
    return {
        "type": op,
        "target": target,
        "step": step.reason or type(step).__name__,
        "startedAt": prev.started_at if same and prev is not None else now,
        "message": step.message,
    }


def _current_version(observed: Observed) -> str:
    versions = sorted({p.version for p in observed.pods if p.version})
    return ",".join(versions)


def build(
    spec: Spec, observed: Observed, step: Step, previous: Mapping[str, Any]
) -> dict[str, Any]:
    """The whole ``status`` to write after this pass."""
    now = iso(observed.now)
    cluster = observed.cluster
    leader = cluster.leader if cluster else None
    members = [
        {
            "name": m.name,
            "id": f"{m.id:x}",
            "role": "learner" if m.is_learner else "voter",
            "healthy": m.healthy,
            "appliedIndex": m.applied_index,
            "version": m.version,
        }
        for m in sorted(cluster.members if cluster else (), key=lambda m: (m.name, m.id))
    ]
    return {
        "observedGeneration": spec.generation,
        "replicas": sum(1 for p in observed.pods if not p.deleting),
        "readyReplicas": sum(1 for p in observed.pods if p.ready and not p.deleting),
        "selector": label_selector(spec.name),
        "leader": (leader.name or f"{leader.id:x}") if leader else "",
        "members": members,
        "currentVersion": _current_version(observed),
        "phase": phase(spec, observed, step),
        "operation": operation(spec, observed, step, now),
        "conditions": merge_conditions(
            previous.get("conditions") or [],
            conditions(spec, observed, step),
            now,
            spec.generation,
        ),
    }
