"""Pure builders: a ``RaftCluster`` body in, the Kubernetes objects that run it out.

Every object is a plain dict, owned by the RaftCluster (so deleting the cluster deletes
them), labelled so that one selector finds all pods of one cluster. The StatefulSet uses
``OnDelete``: the template may change at any time without restarting anything, and pods are
restarted one at a time by the planner, in the order that keeps quorum.

How a pod learns whether it bootstraps or joins: the template carries
``--initial-cluster-state``. It says ``new`` while the first members form the cluster and is
switched to ``existing`` as soon as a leader exists, so every pod created later (scale-up,
replacement of a member whose data was lost) joins the running cluster as the learner the
operator added for it beforehand. Pods that restart with their data ignore both flags.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .model import (
    CONFIG_HASH_ANNOTATION,
    GROUP,
    KIND,
    VERSION,
    config_hash,
    pod_name,
    with_defaults,
)
from .tls import ROLES, tls_spec

Obj = dict[str, Any]

CLIENT_PORT = 2379
PEER_PORT = 2380
METRICS_PORT = 2381
DATA_MOUNT = "/var/lib/flotilla"
DATA_DIR = f"{DATA_MOUNT}/data"
VOLUME = "data"
CONTAINER = "node"
INITIAL_STATE_ANNOTATION = f"{GROUP}/initial-cluster-state"
MANAGED_BY = "flotilla-operator"
TLS_MOUNT = "/etc/flotilla/tls"
"""Each of the TLS Secrets is mounted at ``TLS_MOUNT/<role>`` (server, peer, client)."""

# The objects besides the StatefulSet, by the names observe reports in Observed.missing.
PEER_SERVICE = "peer-service"
CLIENT_SERVICE = "client-service"
STATEFULSET = "statefulset"
PDB = "pdb"
KINDS = (PEER_SERVICE, CLIENT_SERVICE, STATEFULSET, PDB)


def selector_labels(name: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": "flotilla", "app.kubernetes.io/instance": name}


def labels(name: str) -> dict[str, str]:
    return {**selector_labels(name), "app.kubernetes.io/managed-by": MANAGED_BY}


def label_selector(name: str) -> str:
    """``status.selector`` for the scale subresource (what ``kubectl scale`` reads)."""
    return ",".join(f"{k}={v}" for k, v in selector_labels(name).items())


def owner_reference(body: Mapping[str, Any]) -> Obj:
    meta = body["metadata"]
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _metadata(body: Mapping[str, Any], name: str) -> Obj:
    meta = body["metadata"]
    return {
        "name": name,
        "namespace": meta.get("namespace", "default"),
        "labels": labels(meta["name"]),
        "ownerReferences": [owner_reference(body)],
    }


def owned_metadata(body: Mapping[str, Any]) -> Obj:
    """Labels and owner reference for an object of this cluster (without its name)."""
    meta = _metadata(body, "")
    del meta["name"]
    return meta


def peer_service_name(name: str) -> str:
    return f"{name}-peer"


def pvc_name(name: str, ordinal: int) -> str:
    return f"{VOLUME}-{pod_name(name, ordinal)}"


def pod_host(name: str, namespace: str, pod: str) -> str:
    """The stable DNS name of a pod through the headless peer Service."""
    return f"{pod}.{peer_service_name(name)}.{namespace}.svc.cluster.local"


def scheme(body: Mapping[str, Any]) -> str:
    """``https`` for the client and peer URLs of a cluster with ``spec.tls``."""
    return "https" if tls_spec(body) is not None else "http"


def peer_url(name: str, namespace: str, ordinal: int, scheme: str = "http") -> str:
    """The peer URL of pod ``ordinal``: what MemberAdd is called with before the pod exists."""
    return f"{scheme}://{pod_host(name, namespace, pod_name(name, ordinal))}:{PEER_PORT}"


def client_url(name: str, namespace: str, ordinal: int, scheme: str = "http") -> str:
    return f"{scheme}://{pod_host(name, namespace, pod_name(name, ordinal))}:{CLIENT_PORT}"


def cluster_token(body: Mapping[str, Any]) -> str:
    """Unique per cluster object, so a recreated cluster never mixes with an old one."""
    meta = body["metadata"]
    return f"{meta.get('namespace', 'default')}-{meta['name']}-{meta['uid'][:8]}"


def initial_cluster(name: str, namespace: str, replicas: int, scheme: str = "http") -> str:
    return ",".join(
        f"{pod_name(name, k)}={peer_url(name, namespace, k, scheme)}" for k in range(replicas)
    )


def min_available(replicas: int) -> int:
    """Voluntary disruptions may never take away the quorum."""
    return replicas // 2 + 1


def node_args(body: Mapping[str, Any], replicas: int, initial_cluster_state: str) -> list[str]:
    meta = body["metadata"]
    name, ns = meta["name"], meta.get("namespace", "default")
    spec = with_defaults(body["spec"])
    raft = spec["raft"]
    own = pod_host(name, ns, "$(POD_NAME)")
    s = scheme(body)
    return [
        "--name=$(POD_NAME)",
        f"--data-dir={DATA_DIR}",
        f"--listen-client-urls={s}://0.0.0.0:{CLIENT_PORT}",
        f"--advertise-client-urls={s}://{own}:{CLIENT_PORT}",
        f"--listen-peer-urls={s}://0.0.0.0:{PEER_PORT}",
        f"--initial-advertise-peer-urls={s}://{own}:{PEER_PORT}",
        f"--initial-cluster={initial_cluster(name, ns, replicas, s)}",
        f"--initial-cluster-state={initial_cluster_state}",
        f"--initial-cluster-token={cluster_token(body)}",
        f"--heartbeat-interval={raft['heartbeatIntervalMs']}",
        f"--election-timeout={raft['electionTimeoutMs']}",
        f"--snapshot-count={raft['snapshotCount']}",
        f"--quota-backend-bytes={spec['quotaBytes']}",
        # Probes and metrics stay plain HTTP on their own port, as etcd's metrics URLs.
        f"--listen-metrics-urls=http://0.0.0.0:{METRICS_PORT}",
        # Only when asked for: a flag every pod already running lacks would roll them all.
        *(["--leader-lease-reads=true"] if raft.get("leaderLeaseReads") else []),
        *auto_compaction_args(spec),
        *corruption_check_args(spec),
        *tls_args(body),
    ]


def auto_compaction_args(spec: Mapping[str, Any]) -> list[str]:
    """etcd's auto-compaction flags, only when the spec asks (pods without them keep going)."""
    auto = spec.get("autoCompaction")
    if not auto:
        return []
    return [
        f"--auto-compaction-mode={auto['mode']}",
        f"--auto-compaction-retention={auto['retention']}",
    ]


def corruption_check_args(spec: Mapping[str, Any]) -> list[str]:
    """etcd's corruption check flags, only when the spec asks."""
    check = spec.get("corruptionCheck") or {}
    args = []
    if check.get("interval") not in (None, "", "0"):
        args.append(f"--corrupt-check-time={check['interval']}")
    if check.get("onStart"):
        args.append("--experimental-initial-corrupt-check=true")
    return args


def tls_args(body: Mapping[str, Any]) -> list[str]:
    """etcd's certificate flags, for the Secrets mounted under ``TLS_MOUNT``."""
    tls = tls_spec(body)
    if tls is None:
        return []
    server, peer = f"{TLS_MOUNT}/server", f"{TLS_MOUNT}/peer"
    args = [
        f"--cert-file={server}/tls.crt",
        f"--key-file={server}/tls.key",
        f"--trusted-ca-file={server}/ca.crt",
    ]
    if tls.client_cert_auth:
        args.append("--client-cert-auth")
    return [
        *args,
        f"--peer-cert-file={peer}/tls.crt",
        f"--peer-key-file={peer}/tls.key",
        f"--peer-trusted-ca-file={peer}/ca.crt",
        "--peer-client-cert-auth",
    ]


def tls_volumes(body: Mapping[str, Any]) -> tuple[list[Obj], list[Obj]]:
    """The pod's volumes for the server and peer Secrets, and the container's mounts."""
    tls = tls_spec(body)
    if tls is None:
        return [], []
    secrets = {"server": tls.server_secret, "peer": tls.peer_secret}
    volumes = [
        {"name": f"tls-{role}", "secret": {"secretName": secrets[role], "defaultMode": 0o400}}
        for role in ROLES
        if role in secrets
    ]
    mounts = [
        {"name": f"tls-{role}", "mountPath": f"{TLS_MOUNT}/{role}", "readOnly": True}
        for role in ROLES
        if role in secrets
    ]
    return volumes, mounts


def _field_env(name: str, path: str) -> Obj:
    return {"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}}


def _container(body: Mapping[str, Any], replicas: int, initial_cluster_state: str) -> Obj:
    spec = with_defaults(body["spec"])
    container: Obj = {
        "name": CONTAINER,
        "image": f"{spec['image']}:{spec['version']}",
        "command": ["flotilla-node"],
        "args": node_args(body, replicas, initial_cluster_state),
        "env": [
            _field_env("POD_NAME", "metadata.name"),
            _field_env("POD_NAMESPACE", "metadata.namespace"),
            _field_env("POD_IP", "status.podIP"),
        ],
        "ports": [
            {"name": "client", "containerPort": CLIENT_PORT},
            {"name": "peer", "containerPort": PEER_PORT},
            {"name": "metrics", "containerPort": METRICS_PORT},
        ],
        "volumeMounts": [{"name": VOLUME, "mountPath": DATA_MOUNT}, *tls_volumes(body)[1]],
        # Ready: a member that serves reads and writes. Taken out of the client Service
        # otherwise; the peer Service publishes not-ready addresses so members still meet.
        "readinessProbe": {
            "httpGet": {"path": "/readyz", "port": METRICS_PORT},
            "periodSeconds": 5,
            "timeoutSeconds": 3,
            "failureThreshold": 3,
        },
        # Liveness must only fail when a restart cures something: /livez fails when the
        # member's loop is stuck, never for want of a leader. (/health does fail without a
        # leader; probing it would restart every member of a cluster that lost quorum, which
        # only makes its recovery slower, as etcd's own operators know.)
        "livenessProbe": {
            "httpGet": {"path": "/livez", "port": METRICS_PORT},
            "initialDelaySeconds": 15,
            "periodSeconds": 10,
            "timeoutSeconds": 5,
            "failureThreshold": 6,
        },
    }
    if spec["resources"]:
        container["resources"] = spec["resources"]
    return container


def _pod_template(body: Mapping[str, Any], replicas: int, initial_cluster_state: str) -> Obj:
    name = body["metadata"]["name"]
    spec = with_defaults(body["spec"])
    custom = spec["podTemplate"]
    pod_spec: Obj = {
        "containers": [_container(body, replicas, initial_cluster_state)],
        "terminationGracePeriodSeconds": 30,
        "enableServiceLinks": False,
    }
    volumes = tls_volumes(body)[0]
    if volumes:
        pod_spec["volumes"] = volumes
    for key in ("affinity", "tolerations", "nodeSelector"):
        if custom.get(key):
            pod_spec[key] = custom[key]
    return {
        "metadata": {
            # Ours last: the selector labels cannot be overridden away.
            "labels": {**custom.get("labels", {}), **labels(name)},
            "annotations": {
                **custom.get("annotations", {}),
                CONFIG_HASH_ANNOTATION: config_hash(spec),
                INITIAL_STATE_ANNOTATION: initial_cluster_state,
            },
        },
        "spec": pod_spec,
    }


def statefulset(
    body: Mapping[str, Any], replicas: int | None = None, initial_cluster_state: str = "new"
) -> Obj:
    """The StatefulSet with ``replicas`` pods (default: the spec's)."""
    name = body["metadata"]["name"]
    spec = with_defaults(body["spec"])
    n = spec["replicas"] if replicas is None else replicas
    storage = spec["storage"]
    claim_spec: Obj = {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": storage["size"]}},
    }
    if storage.get("storageClassName"):
        claim_spec["storageClassName"] = storage["storageClassName"]
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": _metadata(body, name),
        "spec": {
            "replicas": n,
            "serviceName": peer_service_name(name),
            "podManagementPolicy": "Parallel",
            "updateStrategy": {"type": "OnDelete"},
            # Claims of removed members are deleted by the planner (or kept, as the spec
            # says), never by the StatefulSet controller behind its back.
            "persistentVolumeClaimRetentionPolicy": {
                "whenDeleted": spec["pvcRetentionPolicy"],
                "whenScaled": "Retain",
            },
            "selector": {"matchLabels": selector_labels(name)},
            "template": _pod_template(body, n, initial_cluster_state),
            "volumeClaimTemplates": [
                {"metadata": {"name": VOLUME, "labels": labels(name)}, "spec": claim_spec}
            ],
        },
    }


def peer_service(body: Mapping[str, Any]) -> Obj:
    name = body["metadata"]["name"]
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(body, peer_service_name(name)),
        "spec": {
            "clusterIP": "None",
            # Members must find each other before they are Ready: a member is only Ready
            # once it has a leader, which needs the others.
            "publishNotReadyAddresses": True,
            "selector": selector_labels(name),
            "ports": [
                {"name": "peer", "port": PEER_PORT, "targetPort": PEER_PORT},
                {"name": "client", "port": CLIENT_PORT, "targetPort": CLIENT_PORT},
            ],
        },
    }


def client_service(body: Mapping[str, Any]) -> Obj:
    name = body["metadata"]["name"]
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(body, name),
        "spec": {
            "selector": selector_labels(name),
            "ports": [{"name": "client", "port": CLIENT_PORT, "targetPort": CLIENT_PORT}],
        },
    }


def pod_disruption_budget(body: Mapping[str, Any], pods: int | None = None) -> Obj:
    """The budget for a cluster of ``pods`` members (default: the spec's replicas).

    Pass the larger of the spec and the StatefulSet (``budget_pods``): while 5 -> 3 is in
    flight, five voters still need three of them, whatever the spec already says.
    """
    name = body["metadata"]["name"]
    replicas = with_defaults(body["spec"])["replicas"] if pods is None else pods
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _metadata(body, name),
        "spec": {
            "minAvailable": min_available(replicas),
            "selector": {"matchLabels": selector_labels(name)},
        },
    }


def budget_pods(body: Mapping[str, Any], statefulset_replicas: int | None) -> int:
    """How many members the budget protects: the spec's, or more while a scale-down runs."""
    return max(int(with_defaults(body["spec"])["replicas"]), statefulset_replicas or 0)


def build(
    body: Mapping[str, Any], kind: str, replicas: int | None = None, initial_state: str = "new"
) -> Obj:
    """The object of one of ``KINDS``, as ``CreateResources`` names them."""
    if kind == PEER_SERVICE:
        return peer_service(body)
    if kind == CLIENT_SERVICE:
        return client_service(body)
    if kind == STATEFULSET:
        return statefulset(body, replicas, initial_state)
    if kind == PDB:
        return pod_disruption_budget(body, replicas)
    raise ValueError(f"unknown kind {kind!r}")
