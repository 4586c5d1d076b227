"""A tiny language for describing the world the planner sees, so tests read like stories.

``world()`` with no arguments is a healthy, converged three-member cluster named ``db``:
pods 0..2 Ready on version 1.0, each member a voter that has caught up, pod 0 the leader,
every claim bound to its member. Each keyword changes one thing about that picture.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from flotilla.operator.model import Cluster, Member, Observed, Pod, Pvc, Spec, StatefulSet

NOW = 1_800_000_000.0
HOUR = 3600.0
OLD_HASH, HASH, NEW_HASH = "h0-old-config", "h1-config", "h2-new-config"
HASHES = {"0.9": OLD_HASH, "1.0": HASH, "1.1": NEW_HASH}


def mid(ordinal: int) -> int:
    """The member id of the member first created for pod ``ordinal``."""
    return 0xA0 + ordinal


def spec(
    replicas: int = 3, version: str = "1.0", config_hash: str = "", pvc_retention: str = "Retain"
) -> Spec:
    """The spec of cluster ``db``; the configuration digest follows the version."""
    return Spec(
        name="db",
        namespace="ns",
        replicas=replicas,
        version=version,
        pvc_retention=pvc_retention,
        config_hash=config_hash or HASHES[version],
    )


def world(
    voters: Iterable[int] = (0, 1, 2),
    learners: Iterable[int] = (),
    leader: int | None = 0,
    sts: int | None = None,
    unhealthy: Iterable[int] = (),
    lag: Mapping[int, int] | None = None,
    ids: Mapping[int, int] | None = None,
    pods: Iterable[Pod] | None = None,
    pvcs: Iterable[Pvc] | None = None,
    pods_on: Mapping[int, str] | None = None,
    reports: Mapping[int, str] | None = None,
    template_hash: str = HASH,
    state: str = "existing",
    joint: bool = False,
    missing: Iterable[str] = (),
    strangers: Iterable[Member] = (),
    cluster: bool = True,
    now: float = NOW,
) -> Observed:
    """The world, described by what differs from a healthy three-member cluster.

    ``pods_on`` maps an ordinal to the version its pod runs ("1.0" unless said; such a pod was
    restarted a minute ago); ``reports`` maps an ordinal to the version its member reports
    (the pod's unless said). ``sts`` is the StatefulSet's size (default: one past the highest
    member); there is a Ready pod and a claim bound to its member for each ordinal below it.
    """
    voters, learners, unhealthy = tuple(voters), tuple(learners), set(unhealthy)
    lag, ids, pods_on, reports = lag or {}, ids or {}, pods_on or {}, reports or {}
    everyone = sorted(set(voters) | set(learners))
    n = sts if sts is not None else (max(everyone) + 1 if everyone else 0)

    def version_of(k: int) -> str:
        return pods_on.get(k, "1.0")

    def member(k: int) -> Member:
        return Member(
            id=ids.get(k, mid(k)),
            ordinal=k,
            name=f"db-{k}",
            is_learner=k in learners,
            healthy=k not in unhealthy,
            lag=lag.get(k, 0),
            applied_index=1000 - lag.get(k, 0),
            version=reports.get(k, version_of(k)),
        )

    members = tuple(member(k) for k in everyone) + tuple(strangers)
    if pods is None:
        pods = tuple(
            Pod(
                k,
                ready=k not in unhealthy,
                version=version_of(k),
                config_hash=HASHES[version_of(k)],
                # A pod on a version named in pods_on was restarted onto it a minute ago.
                created_at=NOW - 60 if k in pods_on else NOW - HOUR,
            )
            for k in range(n)
        )
    if pvcs is None:
        pvcs = tuple(Pvc(k, ids.get(k, mid(k)) if k in everyone else None) for k in range(n))
    view = None
    if cluster:
        leader_id = None if leader is None else ids.get(leader, mid(leader))
        view = Cluster(members, leader_id, joint)
    return Observed(
        now=now,
        statefulset=StatefulSet(n, template_hash, state) if "statefulset" not in missing else None,
        missing=frozenset(m for m in missing if m != "statefulset"),
        pods=tuple(pods),
        pvcs=tuple(pvcs),
        cluster=view,
    )


def pod(k: int, **kw: object) -> Pod:
    """A Ready pod on version 1.0 created an hour ago, unless said otherwise."""
    defaults: dict[str, object] = {
        "ready": True,
        "version": "1.0",
        "config_hash": HASH,
        "created_at": NOW - HOUR,
    }
    return Pod(k, **{**defaults, **kw})  # type: ignore[arg-type]
