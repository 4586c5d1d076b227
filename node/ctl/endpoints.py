"""Where the ``flotilla`` command finds a cluster: flags, the local cluster, or Kubernetes.

Order: ``--endpoints`` if given; else, with ``--cluster``, the pods of that RaftCluster read
through the Kubernetes API (pod IPs: the members' own advertised names resolve only inside
the cluster); else the cluster ``flotilla local up`` started; else ``127.0.0.1:2379``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

DEFAULT = ["127.0.0.1:2379"]
CLIENT_PORT = 2379


class EndpointError(Exception):
    """No endpoint could be worked out (a missing RaftCluster, no running pods...)."""


def normalize(endpoint: str) -> str:
    """``http://host:port`` or ``host:port`` -> ``host:port`` (what gRPC dials)."""
    endpoint = endpoint.strip()
    for scheme in ("http://", "https://"):
        endpoint = endpoint.removeprefix(scheme)
    return endpoint.rstrip("/")


def split(flag: str) -> list[str]:
    return [normalize(e) for e in flag.split(",") if e.strip()]


def local(data_root: Path) -> list[str] | None:
    """The endpoints ``flotilla local up`` recorded, if it ever ran with this data root."""
    recorded = data_root / "endpoints.json"
    if not recorded.exists():
        return None
    return [normalize(u) for u in json.loads(recorded.read_text())]


def from_pods(pods: Iterable[Mapping[str, Any]], port: int = CLIENT_PORT) -> list[str]:
    """Client endpoints of the running pods of a cluster, by pod IP, in ordinal order."""
    out = []
    for pod in sorted(pods, key=lambda p: _ordinal(p["metadata"]["name"])):
        status = pod.get("status") or {}
        ip = status.get("podIP")
        if ip and status.get("phase") == "Running" and not pod["metadata"].get("deletionTimestamp"):
            out.append(f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}")
    return out


def _ordinal(pod_name: str) -> tuple[int, str]:
    tail = pod_name.rsplit("-", 1)[-1]
    return (int(tail), pod_name) if tail.isdigit() else (1 << 30, pod_name)


def kube_configuration(kubeconfig: str | None) -> Any:
    """The Kubernetes client configuration from a kubeconfig file (or the default one)."""
    from kubernetes import client, config

    cfg = client.Configuration()
    loader: Any = config  # partly typed upstream
    loader.load_kube_config(config_file=kubeconfig, client_configuration=cfg)
    return cfg


def from_kubernetes(kubeconfig: str | None, namespace: str, cluster: str) -> list[str]:
    """The pods of RaftCluster ``cluster``, read with the operator's own thin client."""
    from flotilla.operator.kube import Kube, KubeError
    from flotilla.operator.resources import CLIENT_PORT as port
    from flotilla.operator.resources import label_selector

    kube = Kube(kube_configuration(kubeconfig))
    try:
        if kube.get("raftclusters", namespace, cluster) is None:
            raise EndpointError(f"no RaftCluster {cluster!r} in namespace {namespace!r}")
        pods = kube.list("pods", namespace, label_selector(cluster))
    except KubeError as exc:
        raise EndpointError(f"Kubernetes API: {exc}") from exc
    found = from_pods(pods, port)
    if not found:
        raise EndpointError(f"RaftCluster {namespace}/{cluster} has no running pods")
    return found


def resolve(
    endpoints: str | None,
    kubeconfig: str | None,
    namespace: str,
    cluster: str | None,
    data_root: Path,
) -> list[str]:
    if endpoints:
        return split(endpoints)
    if cluster:
        return from_kubernetes(kubeconfig, namespace, cluster)
    return local(data_root) or list(DEFAULT)
