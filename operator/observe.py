"""Read the world into one snapshot: Kubernetes objects plus the live member list.

Pure reading: nothing here changes anything. Members are asked directly at their pods'
addresses (``podIP:2379``), which works from inside the cluster and from a host that routes
to pods, and does not depend on cluster DNS. Every member that answers gives its ``Status``;
the leader is the member that says it is the leader (the highest term wins if two say so),
and its ``MemberList`` is the member list. Lag is the leader's commit index minus each
member's applied index: good enough to tell "caught up" from "still catching up".

The member list cannot show a joint configuration; ``Reconfigure`` waits for its transition
to finish before returning, and the leader leaves a joint configuration on its own, so a
pass that meets one simply has its next membership change refused and retried.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import grpc

from flotilla.node.api.etcdpb import rpc_pb2 as pb
from flotilla.node.api.etcdpb import rpc_pb2_grpc

from . import readers, resources
from .kube import Kube
from .model import Cluster, Member, Observed, Spec
from .tls import PLAIN, Dialer, dialer_from_secret, tls_spec

# How long one member may take to answer; members that do not answer in time are unhealthy.
RPC_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class MemberStatus:
    """What one member said about itself."""

    id: int
    leader: int
    term: int
    commit_index: int
    applied_index: int
    version: str
    alarms: tuple[tuple[int, str], ...] = ()


@dataclass(frozen=True)
class World:
    """``Observed`` for the planner, plus where ``act`` finds the members."""

    observed: Observed
    addresses: Mapping[int, str] = field(default_factory=dict)  # ordinal -> host:port
    leader_address: str | None = None
    dialer: Dialer = PLAIN  # TLS with the operator's client certificate, for spec.tls


def endpoint(pod: Mapping[str, Any]) -> str | None:
    """``podIP:2379`` of a pod that has an address and is not going away."""
    ip = (pod.get("status") or {}).get("podIP")
    if not ip or pod["metadata"].get("deletionTimestamp"):
        return None
    return f"{ip}:{resources.CLIENT_PORT}"


def flotilla_version(reported: str) -> str:
    """Flotilla's own version from what Status reports (``3.5.0+flotilla.0.1.0`` -> 0.1.0)."""
    return reported.split("+flotilla.", 1)[1] if "+flotilla." in reported else reported


def member_status(
    address: str, timeout: float = RPC_TIMEOUT_S, dialer: Dialer = PLAIN
) -> MemberStatus | None:
    """Ask one member for its Status; None if it does not answer."""
    with dialer.channel(address) as channel:
        stub = rpc_pb2_grpc.MaintenanceStub(channel)
        try:
            s = stub.Status(pb.StatusRequest(), timeout=timeout)
        except grpc.RpcError:
            return None
    return MemberStatus(
        id=s.header.member_id,
        leader=s.leader,
        term=s.raftTerm,
        commit_index=s.raftIndex,
        applied_index=s.raftAppliedIndex,
        version=flotilla_version(s.version),
        alarms=parse_alarms(s.errors),
    )


def parse_alarms(errors: Sequence[str]) -> tuple[tuple[int, str], ...]:
    """Status ``errors`` as etcd words them (``memberID:12 alarm:NOSPACE``) as (id, type);
    anything else in the list is not an alarm."""
    out = []
    for text in errors:
        fields = dict(f.split(":", 1) for f in text.split() if ":" in f)
        member, alarm = fields.get("memberID", ""), fields.get("alarm")
        if member.isdigit() and alarm:
            out.append((int(member), alarm))
    return tuple(out)


def member_list(
    address: str, timeout: float = RPC_TIMEOUT_S, dialer: Dialer = PLAIN
) -> Sequence[Any] | None:
    with dialer.channel(address) as channel:
        stub = rpc_pb2_grpc.ClusterStub(channel)
        try:
            return list(stub.MemberList(pb.MemberListRequest(), timeout=timeout).members)
        except grpc.RpcError:
            return None


def read_cluster(
    name: str,
    statuses: Mapping[int, MemberStatus],
    members: Sequence[Any] | None,
    leader_id: int | None,
) -> Cluster | None:
    """The member list with each member's health and lag, from what the members said.

    Pure: ``statuses`` maps ordinals to the Status of the member there; ``members`` is a
    MemberList answer (None: nobody answered).
    """
    if members is None:
        return None
    by_id = {s.id: s for s in statuses.values()}
    leader = by_id.get(leader_id) if leader_id is not None else None
    out = []
    for m in members:
        s = by_id.get(m.ID)
        healthy = s is not None and s.leader != 0
        lag = None
        if s is not None and leader is not None:
            lag = max(0, leader.commit_index - s.applied_index)
        out.append(
            Member(
                id=m.ID,
                ordinal=readers.member_ordinal(name, m.name, m.peerURLs),
                name=m.name,
                is_learner=m.isLearner,
                healthy=healthy,
                lag=lag,
                applied_index=s.applied_index if s else 0,
                version=s.version if s else "",
            )
        )
    if leader is None:
        return Cluster(tuple(out), None)
    return Cluster(tuple(out), leader_id, alarms=leader.alarms)


def elected(statuses: Mapping[int, MemberStatus]) -> int | None:
    """The ordinal of the member that says it leads (the highest term if several do)."""
    leaders = [(s.term, k) for k, s in statuses.items() if s.id and s.leader == s.id]
    return max(leaders)[1] if leaders else None


def observe(kube: Kube, body: Mapping[str, Any], now: float | None = None) -> World:
    spec = Spec.from_body(body)
    name, ns = spec.name, spec.namespace
    selector = resources.label_selector(name)
    sts_obj = kube.get("statefulsets", ns, name)
    pod_objs = kube.list("pods", ns, selector)
    pvc_objs = kube.list("persistentvolumeclaims", ns, selector)
    missing = set()
    sts = readers.read_statefulset(sts_obj) if sts_obj else None
    budget = resources.budget_pods(body, sts.replicas if sts else None)
    for kind, kube_kind, obj_name in (
        (resources.PEER_SERVICE, "services", resources.peer_service_name(name)),
        (resources.CLIENT_SERVICE, "services", name),
        (resources.PDB, "poddisruptionbudgets", name),
    ):
        live = kube.get(kube_kind, ns, obj_name)
        if live is None or readers.drifted(resources.build(body, kind, budget), live):
            missing.add(kind)

    addresses = {}
    for obj in pod_objs:
        ordinal = readers.read_pod(name, obj)
        address = endpoint(obj)
        if ordinal is not None and address is not None:
            addresses[ordinal.ordinal] = address
    dialer = PLAIN
    tls = tls_spec(body)
    if tls is not None:
        dialer = dialer_from_secret(body, kube.get("secrets", ns, tls.client_secret))
    statuses = _statuses(addresses, dialer)
    leader_ordinal = elected(statuses)
    leader_id = statuses[leader_ordinal].id if leader_ordinal is not None else None
    members = None
    # The leader's list is the newest; any member's list still tells who exists.
    for k in [leader_ordinal, *sorted(statuses)]:
        if k is not None:
            members = member_list(addresses[k], dialer=dialer)
            if members is not None:
                break

    observed = Observed(
        now=time.time() if now is None else now,
        statefulset=sts,
        missing=frozenset(missing),
        pods=readers.read_pods(name, pod_objs),
        pvcs=readers.read_pvcs(name, pvc_objs),
        cluster=read_cluster(name, statuses, members, leader_id),
        operation=readers.read_operation(body.get("status") or {}),
    )
    leader_address = addresses[leader_ordinal] if leader_ordinal is not None else None
    return World(observed, addresses, leader_address, dialer)


def _statuses(addresses: Mapping[int, str], dialer: Dialer) -> dict[int, MemberStatus]:
    if not addresses:
        return {}

    def ask(address: str) -> MemberStatus | None:
        return member_status(address, dialer=dialer)

    with ThreadPoolExecutor(max_workers=len(addresses)) as pool:
        answers = dict(zip(addresses, pool.map(ask, addresses.values()), strict=True))
    return {k: s for k, s in answers.items() if s is not None}
