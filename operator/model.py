"""What the planner sees: the desired spec and one observed snapshot of the world.

Both are frozen values built by ``observe`` (Kubernetes objects plus the live member list of
a healthy member) so that ``plan`` is a pure function and a test is a table of values. The
in-memory state of the operator is never an input: two passes over the same world decide the
same step, which is what makes a crash anywhere harmless (DESIGN.md, principle 3).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

GROUP = "flotilla.dev"
VERSION = "v1alpha1"
PLURAL = "raftclusters"
KIND = "RaftCluster"

DEFAULT_IMAGE = "flotilla/node"
DEFAULT_REPLICAS = 3
DEFAULT_STORAGE_SIZE = "1Gi"
DEFAULT_HEARTBEAT_MS = 100
DEFAULT_ELECTION_MS = 1000
DEFAULT_SNAPSHOT_COUNT = 10_000
DEFAULT_QUOTA_BYTES = 2 * 1024**3
RETAIN = "Retain"
DELETE = "Delete"

# Annotation on a data PVC: the id (hex, as etcdctl prints it) of the Raft member whose log
# lives on it. Written once the member has been seen healthy on that claim; a claim without it
# is fresh (or not yet bound).
MEMBER_ID_ANNOTATION = f"{GROUP}/member-id"
# Annotation on the pod template: a digest of every spec field that shapes the pods. A pod
# whose value differs from the spec's runs an older configuration and is rolled.
CONFIG_HASH_ANNOTATION = f"{GROUP}/config-hash"

# Spec fields that do not shape the pod template: changing them must not restart any pod.
_NOT_IN_TEMPLATE = ("replicas", "storage", "pvcRetentionPolicy")


def with_defaults(spec: Mapping[str, Any]) -> dict[str, Any]:
    """The spec with the CRD's defaults filled in.

    The API server applies the same defaults from the schema; doing it here too keeps the
    builders and the planner honest for bodies that never went through an API server.
    """
    out = dict(spec)
    out.setdefault("replicas", DEFAULT_REPLICAS)
    out.setdefault("image", DEFAULT_IMAGE)
    out["storage"] = {"size": DEFAULT_STORAGE_SIZE, **(out.get("storage") or {})}
    out["raft"] = {
        "heartbeatIntervalMs": DEFAULT_HEARTBEAT_MS,
        "electionTimeoutMs": DEFAULT_ELECTION_MS,
        "snapshotCount": DEFAULT_SNAPSHOT_COUNT,
        **(out.get("raft") or {}),
    }
    if not out["raft"].get("leaderLeaseReads", False):
        # Off is the default the schema leaves unset: spelling it out is the same spec.
        out["raft"].pop("leaderLeaseReads", None)
    if out.get("autoCompaction"):
        out["autoCompaction"] = {"mode": "periodic", **out["autoCompaction"]}
    out.setdefault("quotaBytes", DEFAULT_QUOTA_BYTES)
    out.setdefault("pvcRetentionPolicy", RETAIN)
    out.setdefault("resources", {})
    out.setdefault("podTemplate", {})
    return out


def config_hash(spec: Mapping[str, Any]) -> str:
    """A short digest of the spec fields that end up in the pod template."""
    shaping = {k: v for k, v in with_defaults(spec).items() if k not in _NOT_IN_TEMPLATE}
    text = json.dumps(shaping, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def pod_name(cluster: str, ordinal: int) -> str:
    return f"{cluster}-{ordinal}"


def ordinal_of(cluster: str, name_or_url: str) -> int | None:
    """The ordinal of one of this cluster's pods from a member name or a peer URL.

    Members added as learners have no name until they start, so their peer URL
    (``http://<cluster>-<k>.<cluster>-peer...``) is the reliable key. None: not one of ours.
    """
    host = re.sub(r"^[a-z]+://", "", name_or_url).split("/")[0].split(":")[0].split(".")[0]
    m = re.fullmatch(re.escape(cluster) + r"-(\d+)", host)
    return int(m.group(1)) if m else None


@dataclass(frozen=True)
class Spec:
    """The desired state, from ``RaftCluster.spec`` (defaults applied)."""

    name: str
    namespace: str
    replicas: int
    version: str
    image: str = DEFAULT_IMAGE
    pvc_retention: str = RETAIN
    config_hash: str = ""
    generation: int = 0

    @property
    def image_ref(self) -> str:
        return f"{self.image}:{self.version}"

    @property
    def quorum(self) -> int:
        return self.replicas // 2 + 1

    @staticmethod
    def from_body(body: Mapping[str, Any]) -> Spec:
        meta = body.get("metadata", {})
        spec = with_defaults(body.get("spec", {}))
        return Spec(
            name=meta["name"],
            namespace=meta.get("namespace", "default"),
            replicas=int(spec["replicas"]),
            version=str(spec["version"]),
            image=spec["image"],
            pvc_retention=spec["pvcRetentionPolicy"],
            config_hash=config_hash(spec),
            generation=int(meta.get("generation", 0)),
        )


@dataclass(frozen=True)
class Pod:
    """One pod of the StatefulSet, as far as the planner cares."""

    ordinal: int
    phase: str = "Running"  # Pending | Running | Succeeded | Failed | Unknown
    ready: bool = True
    version: str = ""  # the tag of the image the pod runs
    config_hash: str = ""  # the pod's CONFIG_HASH_ANNOTATION
    created_at: float = 0.0  # seconds since the epoch; a restarted pod is a new pod
    deleting: bool = False  # deletionTimestamp is set
    restarts: int = 0  # the node container's restartCount: its process exited or was killed


@dataclass(frozen=True)
class Pvc:
    """The data claim ``data-<cluster>-<ordinal>``."""

    ordinal: int
    member_id: int | None = None  # MEMBER_ID_ANNOTATION, None while unbound
    deleting: bool = False


@dataclass(frozen=True)
class Member:
    """One entry of the live member list, with the leader's view of its progress."""

    id: int
    ordinal: int | None  # see ordinal_of; None for a member that is not one of our pods
    name: str = ""
    is_learner: bool = False
    healthy: bool = True
    lag: int | None = 0  # entries behind the leader's last index; None when unknown
    applied_index: int = 0
    version: str = ""  # what the member reports; "" when it does not say


@dataclass(frozen=True)
class Cluster:
    """The member list and leadership as one healthy member reports them."""

    members: tuple[Member, ...]
    leader_id: int | None
    joint: bool = False  # a joint configuration (C_old,new) is in force
    alarms: tuple[tuple[int, str], ...] = ()
    """Alarms raised in the cluster, as the leader reports them: (member id, alarm type)."""

    @property
    def has_quorum(self) -> bool:
        """A leader exists, so a majority of the voters is reachable and agrees."""
        return self.leader is not None

    @property
    def voters(self) -> tuple[Member, ...]:
        return tuple(m for m in self.members if not m.is_learner)

    @property
    def learners(self) -> tuple[Member, ...]:
        return tuple(m for m in self.members if m.is_learner)

    @property
    def leader(self) -> Member | None:
        return next((m for m in self.members if m.id == self.leader_id), None)

    def at(self, ordinal: int) -> Member | None:
        return next((m for m in self.members if m.ordinal == ordinal), None)

    def by_id(self, member_id: int) -> Member | None:
        return next((m for m in self.members if m.id == member_id), None)


@dataclass(frozen=True)
class StatefulSet:
    replicas: int
    config_hash: str = ""  # CONFIG_HASH_ANNOTATION of the pod template
    initial_cluster_state: str = "new"  # the template's --initial-cluster-state


@dataclass(frozen=True)
class Operation:
    """The in-flight operation as recorded in ``status.operation``.

    Only for continuity of what status shows (``startedAt``): the planner never reads it to
    decide a step, so a lost or stale status cannot mislead it.
    """

    type: str
    target: str
    step: str = ""
    started_at: str = ""
    message: str = ""


@dataclass(frozen=True)
class Observed:
    """One snapshot of the world. ``now`` is an input so that timeouts are pure too."""

    now: float
    statefulset: StatefulSet | None
    # Kinds (see resources.KINDS) of our other objects that are missing, or whose fields
    # differ from what the builders produce for this spec: observe compares, plan decides.
    missing: frozenset[str] = frozenset()
    pods: tuple[Pod, ...] = ()
    pvcs: tuple[Pvc, ...] = ()
    cluster: Cluster | None = None  # None: no member answered
    operation: Operation | None = None

    def pod(self, ordinal: int) -> Pod | None:
        return next((p for p in self.pods if p.ordinal == ordinal), None)

    def pvc(self, ordinal: int) -> Pvc | None:
        return next((p for p in self.pvcs if p.ordinal == ordinal), None)
