"""The local cluster runs StatefulSets the way the Flotilla operator will use them.

A StatefulSet of the tiny HTTP server image, with a headless Service and one PVC per
pod, exercised only through kubectl and HTTP from the host.
"""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from tests.kube.kubectl import (
    apply,
    get,
    get_or_none,
    http,
    kubectl,
    pod_exec,
    pod_ready,
    wait_for,
)
from tests.kube.localkube.config import Config

pytestmark = pytest.mark.kube
Obj = dict[str, Any]
IMAGE = "flotilla-test/httpserver"


def web(
    name: str = "web", replicas: int = 3, tag: str = "1.0", ready_path: str = "/ready"
) -> list[Obj]:
    """Headless Service + StatefulSet of the test HTTP server with a PVC per pod."""
    env = [
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "DATA_DIR", "value": "/var/lib/flotilla-test"},
    ]
    container = {
        "name": "server",
        "image": f"{IMAGE}:{tag}",
        "ports": [{"name": "http", "containerPort": 8080}],
        "env": env,
        "readinessProbe": {"httpGet": {"path": ready_path, "port": "http"}, "periodSeconds": 1},
        "livenessProbe": {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 5},
        "volumeMounts": [{"name": "data", "mountPath": "/var/lib/flotilla-test"}],
    }
    return [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name},
            "spec": {
                "clusterIP": "None",
                "selector": {"app": name},
                "ports": [{"name": "http", "port": 8080}],
            },
        },
        {
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "metadata": {"name": name},
            "spec": {
                "serviceName": name,
                "replicas": replicas,
                "podManagementPolicy": "Parallel",
                "selector": {"matchLabels": {"app": name}},
                "template": {
                    "metadata": {"labels": {"app": name}},
                    "spec": {"terminationGracePeriodSeconds": 5, "containers": [container]},
                },
                "volumeClaimTemplates": [
                    {
                        "metadata": {"name": "data"},
                        "spec": {
                            "accessModes": ["ReadWriteOnce"],
                            "resources": {"requests": {"storage": "1Gi"}},
                        },
                    }
                ],
            },
        },
    ]


def ready_pods(ns: str, app: str, count: int) -> list[Obj]:
    """Wait until exactly ``count`` pods of ``app`` exist and all are Ready."""

    def probe() -> list[Obj] | None:
        pods = get("pods", None, ns)["items"]
        pods = [p for p in pods if p["metadata"].get("labels", {}).get("app") == app]
        live = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
        if len(pods) == count and all(pod_ready(p) for p in live) and len(live) == count:
            return sorted(live, key=lambda p: p["metadata"]["name"])
        return None

    return wait_for(f"{count} ready pods of {app} in {ns}", probe, timeout=90)


def info(pod: Obj) -> Obj:
    result: Obj = json.loads(http(f"http://{pod['status']['podIP']}:8080/info"))
    return result


def _absent(path: Path) -> bool:
    return not path.exists()


def process_gone(pid: int) -> bool:
    return not Path(f"/proc/{pid}").exists()


def test_statefulset_becomes_ready(namespace: str) -> None:
    apply(web(replicas=3), namespace)
    pods = ready_pods(namespace, "web", 3)
    sts = wait_for(
        "statefulset status readyReplicas=3",
        lambda: (
            (s := get("statefulset", "web", namespace))["status"].get("readyReplicas") == 3 and s
        ),
    )
    assert sts["status"]["replicas"] == 3
    ips = {p["status"]["podIP"] for p in pods}
    assert len(ips) == 3, f"pods must have distinct addresses: {ips}"
    for pod in pods:
        name = pod["metadata"]["name"]
        seen = info(pod)
        assert seen["hostname"] == name
        assert seen["pod_name"] == name
        assert seen["pod_ip"] == pod["status"]["podIP"]
        assert seen["namespace"] == namespace
        status = pod["status"]["containerStatuses"][0]
        assert status["image"] == f"{IMAGE}:1.0"
        assert status["ready"] and "running" in status["state"]
    assert len({p["spec"]["nodeName"] for p in pods}) >= 2, "scheduler should spread the pods"


def test_pods_reach_each_other_by_dns_name(namespace: str) -> None:
    apply(web(replicas=3), namespace)
    pods = ready_pods(namespace, "web", 3)
    names = [
        f"web-1.web.{namespace}.svc.cluster.local",
        f"web-2.web.{namespace}.svc",
        "web-2.web",
        f"web-0.web.{namespace}",
    ]
    source = pods[0]["status"]["podIP"]
    for name in names:
        url = f"http://{name}:8080/info"

        def fetch(url: str = url) -> Obj:
            return dict(json.loads(http(f"http://{source}:8080/fetch?url={url}")))

        seen = wait_for(f"web-0 to fetch {url}", fetch, timeout=30)
        assert seen["pod_name"] == name.split(".")[0]
    # The names resolve with the system resolver inside the pod, too.
    web1 = f"web-1.web.{namespace}.svc.cluster.local"
    assert pods[1]["status"]["podIP"] in pod_exec(namespace, "web-0", "getent", "hosts", web1)
    assert pod_exec(namespace, "web-2", "hostname").strip() == "web-2"


def test_pvc_data_survives_pod_deletion(namespace: str) -> None:
    apply(web(replicas=1), namespace)
    (pod,) = ready_pods(namespace, "web", 1)
    http(f"http://{pod['status']['podIP']}:8080/data/greeting", "PUT", b"hello, raft")
    old_uid, old_pid = pod["metadata"]["uid"], info(pod)["pid"]

    kubectl("delete", "pod", "web-0", "-n", namespace)
    wait_for(f"old web-0 process {old_pid} to exit", lambda: process_gone(old_pid), timeout=30)

    def replaced() -> Obj | None:
        p = get_or_none("pod", "web-0", namespace)
        return p if p and p["metadata"]["uid"] != old_uid and pod_ready(p) else None

    new = wait_for("web-0 to be recreated and Ready", replaced, timeout=60)
    assert http(f"http://{new['status']['podIP']}:8080/data/greeting") == "hello, raft"
    # Inside the container the claim is mounted at its mountPath.
    assert pod_exec(namespace, "web-0", "cat", "/var/lib/flotilla-test/greeting") == "hello, raft"


def test_scale_adds_and_removes_pods(namespace: str) -> None:
    apply(web(replicas=1), namespace)
    ready_pods(namespace, "web", 1)

    kubectl("scale", "statefulset", "web", "--replicas=3", "-n", namespace)
    pods = ready_pods(namespace, "web", 3)
    assert [p["metadata"]["name"] for p in pods] == ["web-0", "web-1", "web-2"]
    pids = {p["metadata"]["name"]: info(p)["pid"] for p in pods}

    kubectl("scale", "statefulset", "web", "--replicas=1", "-n", namespace)
    (left,) = ready_pods(namespace, "web", 1)
    assert left["metadata"]["name"] == "web-0"
    for name in ("web-1", "web-2"):
        wait_for(f"{name} process to exit", partial(process_gone, pids[name]), timeout=30)
    assert not process_gone(pids["web-0"])
    # The claims of removed replicas stay (StatefulSet default retention policy).
    claims = {c["metadata"]["name"] for c in get("pvc", None, namespace)["items"]}
    assert claims == {"data-web-0", "data-web-1", "data-web-2"}


def test_delete_statefulset_and_pvcs_cleans_up(namespace: str, cluster: Config) -> None:
    apply(web(replicas=2), namespace)
    pods = ready_pods(namespace, "web", 2)
    pids = [info(p)["pid"] for p in pods]
    uids = [p["metadata"]["uid"] for p in pods]
    claims = get("pvc", None, namespace)["items"]
    dirs = [
        Path(get("pv", c["spec"]["volumeName"], None)["spec"]["hostPath"]["path"]) for c in claims
    ]
    assert all(d.is_dir() for d in dirs)

    kubectl("delete", "statefulset", "web", "-n", namespace)
    wait_for(
        "pods of the deleted statefulset to go away",
        lambda: not get("pods", None, namespace)["items"],
        timeout=60,
    )
    for pid in pids:
        wait_for(f"process {pid} to exit", partial(process_gone, pid), timeout=10)
    netns = {p.name for p in Path("/run/netns").glob(cluster.netns_prefix + "*")}
    assert not any(cluster.netns_prefix + uid[:13] in netns for uid in uids)

    kubectl("delete", "pvc", "--all", "-n", namespace)
    for d in dirs:
        wait_for(f"volume directory {d} to be removed", partial(_absent, d), timeout=60)
    wait_for(
        "the persistent volumes to be deleted",
        lambda: (
            not [
                v
                for v in get("pv", None, None)["items"]
                if v["spec"].get("claimRef", {}).get("namespace") == namespace
            ]
        ),
        timeout=60,
    )


def test_failing_readiness_probe_makes_pod_not_ready(namespace: str) -> None:
    apply(web(replicas=1), namespace)
    (pod,) = ready_pods(namespace, "web", 1)
    ip = pod["status"]["podIP"]

    http(f"http://{ip}:8080/ready/off", "POST")

    def not_ready() -> Obj | None:
        p = get("pod", "web-0", namespace)
        return None if pod_ready(p) else p

    p = wait_for("web-0 to become not Ready", not_ready, timeout=30)
    assert p["status"]["phase"] == "Running"
    assert p["status"]["containerStatuses"][0]["ready"] is False
    wait_for(
        "statefulset readyReplicas to drop to 0",
        lambda: not get("statefulset", "web", namespace)["status"].get("readyReplicas"),
        timeout=30,
    )

    events = kubectl(
        "get", "events", "-n", namespace, "--field-selector", "involvedObject.name=web-0"
    )  # fmt: skip
    assert "Readiness probe failed" in events, events

    http(f"http://{ip}:8080/ready/on", "POST")
    ready_pods(namespace, "web", 1)


def test_pod_whose_probe_never_passes_is_never_ready(namespace: str, cluster: Config) -> None:
    apply(web(name="broken", replicas=1, ready_path="/no-such-path"), namespace)

    def running() -> Obj | None:
        p = get_or_none("pod", "broken-0", namespace)
        return p if p and p["status"].get("phase") == "Running" else None

    pod = wait_for("broken-0 to be Running", running, timeout=60)
    wait_for("the server itself to answer", partial(info, pod), timeout=30)
    log = cluster.pods / pod["metadata"]["uid"] / "server.log"

    def failed_probes() -> int:
        return sum(
            "/no-such-path" in line and " 404 " in line for line in log.read_text().splitlines()
        )

    wait_for("three failed readiness probes in the server log", lambda: failed_probes() >= 3)
    pod = get("pod", "broken-0", namespace)
    assert not pod_ready(pod)
    ready = next(c for c in pod["status"]["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "ContainersNotReady"


def test_rolling_upgrade_changes_running_image(namespace: str) -> None:
    apply(web(replicas=2, tag="1.0"), namespace)
    ready_pods(namespace, "web", 2)
    kubectl("set", "image", "statefulset/web", f"server={IMAGE}:2.0", "-n", namespace)
    kubectl("rollout", "status", "statefulset/web", "-n", namespace, "--timeout=90s")
    for pod in ready_pods(namespace, "web", 2):
        assert info(pod)["image_tag"] == "2.0"
        assert pod["status"]["containerStatuses"][0]["image"] == f"{IMAGE}:2.0"


def test_publish_not_ready_addresses(namespace: str) -> None:
    """Raft peers must find each other before they are Ready: names of not-ready pods
    resolve only through a Service with publishNotReadyAddresses."""
    manifests = web(replicas=2, ready_path="/never-ready")
    peers = json.loads(json.dumps(manifests[0]))
    peers["metadata"]["name"] = "peers"
    peers["spec"]["publishNotReadyAddresses"] = True
    apply([*manifests, peers], namespace)

    def running() -> list[Obj] | None:
        pods = get("pods", None, namespace)["items"]
        ok = len(pods) == 2 and all(p["status"].get("podIP") for p in pods)
        return pods if ok else None

    wait_for("two running (not ready) pods", running)
    wait_for(
        "the peers Service to publish web-1 while it is not ready",
        lambda: pod_exec(namespace, "web-0", "getent", "hosts", f"peers.{namespace}.svc").strip(),
    )
    hosts = pod_exec(namespace, "web-0", "cat", "/etc/hosts")
    assert f"web-1.web.{namespace}.svc.cluster.local" not in hosts, hosts
