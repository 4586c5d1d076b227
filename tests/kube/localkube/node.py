"""Register the local Nodes and keep them alive (Lease renewals and Ready condition).

The node lifecycle controller marks a node NotReady (and taints it, and evicts its
pods) when its Lease stops being renewed, so this heartbeat is what keeps a node
schedulable.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
from typing import Any

from .api import Api, ApiError
from .config import Config

Obj = dict[str, Any]
LEASE_SECONDS = 40


def micro_now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def capacity() -> dict[str, str]:
    """Per-node capacity: generous fake numbers, overridable for scheduling tests."""
    return {
        "cpu": os.environ.get("FLOTILLA_KUBE_NODE_CPU", "4"),
        "memory": os.environ.get("FLOTILLA_KUBE_NODE_MEMORY", "8Gi"),
        "pods": os.environ.get("FLOTILLA_KUBE_NODE_PODS", "110"),
        "ephemeral-storage": "50Gi",
    }


def kubelet_port(index: int) -> int:
    return 10250 + index


def node_status(name: str, index: int, version: str, since: str) -> Obj:
    cap = capacity()
    ok = {"lastHeartbeatTime": now_iso(), "lastTransitionTime": since}
    return {
        "capacity": cap,
        "allocatable": cap,
        "conditions": [
            {
                "type": "MemoryPressure",
                "status": "False",
                "reason": "KubeletHasSufficientMemory",
                **ok,
            },
            {"type": "DiskPressure", "status": "False", "reason": "KubeletHasNoDiskPressure", **ok},
            {"type": "PIDPressure", "status": "False", "reason": "KubeletHasSufficientPID", **ok},
            {
                "type": "Ready",
                "status": "True",
                "reason": "KubeletReady",
                "message": "local kubelet is posting ready status",
                **ok,
            },
        ],
        "addresses": [
            {"type": "InternalIP", "address": "127.0.0.1"},
            {"type": "Hostname", "address": name},
        ],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": kubelet_port(index)}},
        "nodeInfo": {
            "machineID": name,
            "systemUUID": name,
            "bootID": name,
            "kernelVersion": platform.release(),
            "osImage": "flotilla localkube",
            "containerRuntimeVersion": "localkube://processes",
            "kubeletVersion": version,
            "kubeProxyVersion": "",
            "operatingSystem": "linux",
            "architecture": "amd64",
        },
    }


class Nodes:
    """The set of Nodes this process plays the kubelet for."""

    def __init__(self, cfg: Config, api: Api, version: str) -> None:
        self.cfg, self.api, self.version = cfg, api, version
        self.names = [cfg.node_name(i) for i in range(1, cfg.nodes + 1)]
        self._since = now_iso()

    def index(self, name: str) -> int:
        return self.names.index(name) + 1

    def register(self) -> None:
        """Create (or adopt) every node, then post its status and lease."""
        for i, name in enumerate(self.names, start=1):
            body = {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {
                    "name": name,
                    "labels": {
                        "kubernetes.io/hostname": name,
                        "kubernetes.io/os": "linux",
                        "kubernetes.io/arch": "amd64",
                        "topology.kubernetes.io/zone": f"zone-{i}",
                    },
                },
                "spec": {
                    "podCIDR": self.cfg.node_pod_cidr(i),
                    "podCIDRs": [self.cfg.node_pod_cidr(i)],
                },
            }
            try:
                self.api.create("/api/v1/nodes", body)
            except ApiError as e:
                if e.status != 409:
                    raise
        self.heartbeat(status=True)

    def heartbeat(self, status: bool) -> None:
        """Renew each node's Lease; with ``status`` also refresh its conditions."""
        for i, name in enumerate(self.names, start=1):
            if status:
                self.api.merge_patch(
                    f"/api/v1/nodes/{name}/status",
                    {"status": node_status(name, i, self.version, self._since)},
                )
            self._renew_lease(name)

    def _renew_lease(self, name: str) -> None:
        path = f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{name}"
        spec = {
            "holderIdentity": name,
            "leaseDurationSeconds": LEASE_SECONDS,
            "renewTime": micro_now(),
        }
        try:
            self.api.merge_patch(path, {"spec": spec})
        except ApiError as e:
            if e.status != 404:
                raise
            node = self.api.get(f"/api/v1/nodes/{name}")
            owner = {
                "apiVersion": "v1",
                "kind": "Node",
                "name": name,
                "uid": node["metadata"]["uid"],
            }
            self.api.create(
                "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases",
                {
                    "metadata": {"name": name, "ownerReferences": [owner]},
                    "spec": {**spec, "acquireTime": spec["renewTime"]},
                },
            )
