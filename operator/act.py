"""Carry out one step of the planner: Kubernetes calls and membership calls, nothing else.

Each function does exactly what operator/README.md ("What act does for each step") says and
returns; it never loops toward a goal. A failure is raised to the caller, which reports it;
the next pass observes the world again and decides afresh, so a step that half happened is
simply seen as the world it left behind.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from flotilla.node.api.etcdpb import flotilla_pb2 as fpb
from flotilla.node.api.etcdpb import flotilla_pb2_grpc, rpc_pb2_grpc
from flotilla.node.api.etcdpb import rpc_pb2 as pb

from . import plan as p
from . import resources
from .kube import JSON_PATCH, Kube
from .model import GROUP, KIND, MEMBER_ID_ANNOTATION, VERSION
from .observe import World
from .tls import (
    PLAIN,
    Dialer,
    ca_from_secret,
    ca_secret,
    ca_secret_name,
    issued_secrets,
    new_ca,
    tls_spec,
)

# Membership calls: one change is committed in well under a second on a healthy cluster;
# a joint transition takes two. Longer means something is wrong, and the next pass looks.
MEMBER_RPC_TIMEOUT_S = 10.0
RECONFIGURE_TIMEOUT_S = 30.0


class ActError(Exception):
    """A step could not be carried out (no leader to ask, a refused membership change)."""


def act(kube: Kube, body: Mapping[str, Any], world: World, step: p.Step) -> None:
    """Carry out ``step`` for the RaftCluster ``body``; steps that only wait do nothing."""
    meta = body["metadata"]
    name, ns = meta["name"], meta.get("namespace", "default")
    match step:
        case p.CreateResources(kinds=kinds, replicas=replicas, initial_cluster_state=state):
            sts = world.observed.statefulset
            if resources.STATEFULSET in kinds:
                ensure_tls_secrets(kube, body)  # before any pod needs to mount them
            for kind in kinds:
                n = replicas
                if kind == resources.PDB:
                    n = resources.budget_pods(body, sts.replicas if sts else None)
                _create_or_restore(kube, ns, resources.build(body, kind, n, state))
        case p.UpdateTemplate(initial_cluster_state=state):
            sts = world.observed.statefulset
            assert sts is not None
            template = resources.statefulset(body, sts.replicas, state)["spec"]["template"]
            kube.patch(
                "statefulsets",
                ns,
                name,
                [{"op": "replace", "path": "/spec/template", "value": template}],
                JSON_PATCH,
            )
        case p.ScaleStatefulSet(replicas=n):
            desired = resources.statefulset(body, n, "existing")["spec"]
            kube.patch(
                "statefulsets",
                ns,
                name,
                [
                    {"op": "replace", "path": "/spec/template", "value": desired["template"]},
                    {"op": "replace", "path": "/spec/replicas", "value": n},
                ],
                JSON_PATCH,
            )
        case p.BindPvc(ordinal=k, member_id=member_id):
            notes = {MEMBER_ID_ANNOTATION: f"{member_id:x}"}
            kube.patch(
                "persistentvolumeclaims",
                ns,
                resources.pvc_name(name, k),
                {"metadata": {"annotations": notes}},
            )
        case p.AddLearner(ordinal=k):
            url = resources.peer_url(name, ns, k, resources.scheme(body))
            request = pb.MemberAddRequest(peerURLs=[url], isLearner=True)
            _on_leader(world, "Cluster", "MemberAdd", request)
        case p.Reconfigure(voters=voters, learners=learners):
            reconfigure(leader_address(world), voters, learners, world.dialer)
        case p.TransferLeadership(to=target):
            _on_leader(world, "Maintenance", "MoveLeader", pb.MoveLeaderRequest(targetID=target))
        case p.RemoveMembers(ids=ids):
            for member_id in ids:
                _on_leader(world, "Cluster", "MemberRemove", pb.MemberRemoveRequest(ID=member_id))
        case p.DeletePod(ordinal=k):
            kube.delete("pods", ns, f"{name}-{k}")
        case p.DeletePvcs(ordinals=ks):
            for k in ks:
                kube.delete("persistentvolumeclaims", ns, resources.pvc_name(name, k))
        case p.ReplaceMember(ordinal=k, member_id=member_id, wipe=wipe):
            _on_leader(world, "Cluster", "MemberRemove", pb.MemberRemoveRequest(ID=member_id))
            if wipe:
                kube.delete("persistentvolumeclaims", ns, resources.pvc_name(name, k))
        case _:
            pass  # WaitFor, ReportQuorumLost, RolloutHalted, Done: status says why


def reconfigure(
    leader: str, voters: tuple[int, ...], learners: tuple[int, ...], dialer: Dialer = PLAIN
) -> list[str]:
    """Flotilla's SetVoters on the leader: one joint transition; the phases it went through."""
    phases = []
    with dialer.channel(leader) as channel:
        stub = flotilla_pb2_grpc.MembershipStub(channel)
        request = fpb.SetVotersRequest(voters=list(voters), learners=list(learners))
        for progress in stub.SetVoters(request, timeout=RECONFIGURE_TIMEOUT_S):
            phases.append(progress.phase)
    if not phases or phases[-1] != "done":
        raise ActError(f"the joint transition ended after {phases or 'nothing'}")
    return phases


def leader_address(world: World) -> str:
    if world.leader_address is None:
        raise ActError("no leader answers")
    return world.leader_address


def _on_leader(world: World, service: str, method: str, request: Any) -> Any:
    """One unary call of the etcd ``Cluster`` or ``Maintenance`` service on the leader."""
    stubs = {"Cluster": rpc_pb2_grpc.ClusterStub, "Maintenance": rpc_pb2_grpc.MaintenanceStub}
    with world.dialer.channel(leader_address(world)) as channel:
        stub: Any = stubs[service](channel)
        return getattr(stub, method)(request, timeout=MEMBER_RPC_TIMEOUT_S)


def ensure_tls_secrets(kube: Kube, body: Mapping[str, Any]) -> None:
    """Create the CA and certificates of ``spec.tls`` unless the user named Secrets. Nothing
    that exists is replaced (members trust the CA that is there): the CA Secret is written
    first, and a pass that stopped half-way is completed from it on the next one."""
    spec = tls_spec(body)
    if spec is None or not spec.managed:
        return
    name, ns = body["metadata"]["name"], body["metadata"].get("namespace", "default")
    meta = resources.owned_metadata(body)
    now = datetime.now(UTC)
    existing = kube.get("secrets", ns, ca_secret_name(name))
    if existing is None:
        ca = new_ca(body, now)
        kube.create("secrets", ns, ca_secret(meta, name, ca))
    else:
        ca = ca_from_secret(existing)
    for secret in issued_secrets(body, meta, ca, now):
        if kube.get("secrets", ns, secret["metadata"]["name"]) is None:
            kube.create("secrets", ns, secret)


def _create_or_restore(kube: Kube, namespace: str, obj: Mapping[str, Any]) -> None:
    """Create ``obj``, or bring the fields the builder sets back if it already exists."""
    kind = {"Service": "services", "StatefulSet": "statefulsets"}.get(
        obj["kind"], "poddisruptionbudgets"
    )
    name = obj["metadata"]["name"]
    if kube.get(kind, namespace, name) is None:
        kube.create(kind, namespace, obj)
        return
    patch = {"metadata": {"labels": obj["metadata"]["labels"]}, "spec": obj["spec"]}
    kube.patch(kind, namespace, name, patch)


# --- Events ------------------------------------------------------------------------------


def event(
    kube: Kube, body: Mapping[str, Any], reason: str, message: str, warning: bool = False
) -> None:
    """Record a core/v1 Event on the RaftCluster (what ``kubectl describe`` shows)."""
    meta = body["metadata"]
    ns = meta.get("namespace", "default")
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    kube.create(
        "events",
        ns,
        {
            "metadata": {"generateName": f"{meta['name']}.", "namespace": ns},
            "involvedObject": {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": KIND,
                "name": meta["name"],
                "namespace": ns,
                "uid": meta["uid"],
            },
            "reason": reason,
            "message": message[:1024],
            "type": "Warning" if warning else "Normal",
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
            "source": {"component": resources.MANAGED_BY},
            "reportingComponent": resources.MANAGED_BY,
            "reportingInstance": socket.gethostname(),
        },
    )
