"""Pod lifecycle on the local kubelet: restart policy, probes, termination, logs."""

from __future__ import annotations

import json
import socket
import time
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
    kubectl_error,
    pod_exec,
    pod_ready,
    wait_for,
)

pytestmark = pytest.mark.kube
Obj = dict[str, Any]


def shell_pod(name: str, script: str, restart: str = "Always", **container: Any) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": restart,
            "terminationGracePeriodSeconds": 3,
            "containers": [
                {"name": "main", "image": "busybox", "command": ["sh", "-c", script], **container}
            ],
        },
    }


def ready_pod(ns: str, name: str) -> Obj | None:
    pod = get_or_none("pod", name, ns)
    return pod if pod is not None and pod_ready(pod) else None


def container_status(ns: str, name: str) -> Obj:
    return dict(get("pod", name, ns)["status"]["containerStatuses"][0])


def test_restart_policies(namespace: str) -> None:
    apply(
        [
            shell_pod("always", "exit 1", "Always"),
            shell_pod("onfailure", "exit 0", "OnFailure"),
            shell_pod("never", "exit 3", "Never"),
        ],
        namespace,
    )
    wait_for(
        "pod 'always' to be restarted twice",
        lambda: container_status(namespace, "always")["restartCount"] >= 2,
    )
    succeeded = wait_for(
        "pod 'onfailure' to succeed",
        lambda: (p := get("pod", "onfailure", namespace))["status"]["phase"] == "Succeeded" and p,
    )
    assert succeeded["status"]["containerStatuses"][0]["restartCount"] == 0
    failed = wait_for(
        "pod 'never' to fail",
        lambda: (p := get("pod", "never", namespace))["status"]["phase"] == "Failed" and p,
    )
    state = failed["status"]["containerStatuses"][0]["state"]["terminated"]
    assert state["exitCode"] == 3 and state["reason"] == "Error"


def test_failing_liveness_probe_restarts_container(namespace: str) -> None:
    probe = {"exec": {"command": ["test", "-e", "/nonexistent"]}, "periodSeconds": 1}
    apply([shell_pod("unhealthy", "exec sleep 1000", livenessProbe=probe)], namespace)
    status = wait_for(
        "the liveness probe to restart the container",
        lambda: (s := container_status(namespace, "unhealthy"))["restartCount"] >= 1 and s,
        timeout=60,
    )
    assert status["lastState"]["terminated"]["exitCode"] in (137, 143)


def test_exec_readiness_probe_follows_a_file(namespace: str) -> None:
    """The exec probe runs in the container's mount namespace: it sees the volume."""
    probe = {"exec": {"command": ["test", "-e", "/flags/ready"]}, "periodSeconds": 1}
    pod = shell_pod(
        "gated",
        "exec sleep 1000",
        readinessProbe=probe,
        volumeMounts=[{"name": "flags", "mountPath": "/flags"}],
    )
    pod["spec"]["volumes"] = [{"name": "flags", "emptyDir": {}}]
    apply([pod], namespace)
    wait_for(
        "pod 'gated' to run",
        lambda: get("pod", "gated", namespace)["status"].get("phase") == "Running",
    )
    assert not pod_ready(get("pod", "gated", namespace))
    pod_exec(namespace, "gated", "touch", "/flags/ready")
    assert not Path("/flags/ready").exists(), "the volume must be mounted only for the pod"
    wait_for("pod 'gated' to become Ready", partial(ready_pod, namespace, "gated"))


def test_graceful_termination_sigterm_then_sigkill(namespace: str) -> None:
    grace = 6
    pods = [
        shell_pod("polite", "trap 'exit 0' TERM; while true; do sleep 0.1; done"),
        shell_pod("stubborn", "trap '' TERM; while true; do sleep 0.1; done"),
    ]
    for pod in pods:
        pod["spec"]["terminationGracePeriodSeconds"] = grace
    apply(pods, namespace)
    for name in ("polite", "stubborn"):
        wait_for(f"{name} to be ready", partial(ready_pod, namespace, name))
    start = time.monotonic()
    kubectl("delete", "pod", "polite", "stubborn", "-n", namespace, "--wait=false")
    wait_for("polite to go", lambda: get_or_none("pod", "polite", namespace) is None, timeout=10)
    polite = time.monotonic() - start
    wait_for("stubborn to go", lambda: get_or_none("pod", "stubborn", namespace) is None)
    stubborn = time.monotonic() - start
    assert polite < grace - 2, f"a pod that exits on SIGTERM took {polite:.1f}s"
    assert stubborn >= grace, f"a pod ignoring SIGTERM went after {stubborn:.1f}s, before its grace"


def test_kubectl_logs(namespace: str) -> None:
    apply([shell_pod("talker", "echo hello from $HOSTNAME; exec sleep 1000")], namespace)
    wait_for(
        "kubectl logs to show the output",
        lambda: "hello from talker" in kubectl("logs", "talker", "-n", namespace, check=False),
    )


def test_downward_api_and_config_env(namespace: str) -> None:
    kubectl("create", "configmap", "settings", "--from-literal=mode=fast", "-n", namespace)
    env = [
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {
            "name": "MODE",
            "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "mode"}},
        },
        {"name": "GREETING", "value": "$(POD_NAME) in $(NS)"},
    ]
    script = 'echo "env: $POD_NAME $POD_IP $NS $MODE / $GREETING"; exec sleep 1000'
    pod = shell_pod(
        "envy", script, env=env, volumeMounts=[{"name": "cfg", "mountPath": "/etc/envy"}]
    )
    pod["spec"]["volumes"] = [{"name": "cfg", "configMap": {"name": "settings"}}]
    apply([pod], namespace)
    pod = wait_for("pod 'envy' to be ready", partial(ready_pod, namespace, "envy"))
    ip = pod["status"]["podIP"]
    expected = f"env: envy {ip} {namespace} fast / envy in {namespace}"
    wait_for(
        f"the log to show {expected!r}",
        lambda: expected in kubectl("logs", "envy", "-n", namespace, check=False),
    )
    # The ConfigMap is also mounted as files.
    assert pod_exec(namespace, "envy", "cat", "/etc/envy/mode") == "fast"


IN_CLUSTER_CLIENT = """
import json, os, ssl, urllib.request
d = "/var/run/secrets/kubernetes.io/serviceaccount"
host, port = os.environ["KUBERNETES_SERVICE_HOST"], os.environ["KUBERNETES_SERVICE_PORT"]
review = {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}
req = urllib.request.Request(
    f"https://{host}:{port}/apis/authentication.k8s.io/v1/selfsubjectreviews",
    data=json.dumps(review).encode(),
    headers={"Authorization": "Bearer " + open(d + "/token").read(),
             "Content-Type": "application/json"},
)
ctx = ssl.create_default_context(cafile=d + "/ca.crt")
user = json.load(urllib.request.urlopen(req, context=ctx))["status"]["userInfo"]["username"]
print("in-cluster user:", user, "namespace:", open(d + "/namespace").read(), flush=True)
"""


def test_pods_reach_the_apiserver_with_their_service_account(namespace: str) -> None:
    pod = shell_pod("incluster", 'python3 -c "$CLIENT" && exec sleep 1000')
    pod["spec"]["containers"][0]["env"] = [{"name": "CLIENT", "value": IN_CLUSTER_CLIENT}]
    apply([pod], namespace)
    expected = f"in-cluster user: system:serviceaccount:{namespace}:default namespace: {namespace}"
    wait_for(
        "the pod to authenticate to the apiserver with its token",
        lambda: expected in kubectl("logs", "incluster", "-n", namespace, check=False),
    )


def test_grpc_readiness_probe(namespace: str) -> None:
    pytest.importorskip("grpc")
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "grpc"},
        "spec": {
            "containers": [
                {
                    "name": "server",
                    "image": "flotilla-test/httpserver:1",
                    "env": [{"name": "GRPC_PORT", "value": "9090"}],
                    "readinessProbe": {"grpc": {"port": 9090}, "periodSeconds": 1},
                }
            ]
        },
    }
    apply([pod], namespace)
    ready = wait_for("the gRPC health check to pass", partial(ready_pod, namespace, "grpc"))
    http(f"http://{ready['status']['podIP']}:8080/ready/off", "POST")
    wait_for(
        "the gRPC health check to fail",
        lambda: not pod_ready(get("pod", "grpc", namespace)),
        timeout=30,
    )


def test_init_containers_and_shared_empty_dir(namespace: str) -> None:
    def pod(name: str, init_script: str) -> Obj:
        mount = [{"name": "work", "mountPath": "/work-shared"}]
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name},
            "spec": {
                "restartPolicy": "Never",
                "volumes": [{"name": "work", "emptyDir": {}}],
                "initContainers": [
                    {
                        "name": "init",
                        "image": "busybox",
                        "command": ["sh", "-c", init_script],
                        "volumeMounts": mount,
                    }
                ],
                "containers": [
                    {
                        "name": "main",
                        "image": "busybox",
                        "command": ["sh", "-c", "cat /work-shared/token"],
                        "volumeMounts": mount,
                    }
                ],
            },
        }

    apply([pod("good", "echo init-was-here > /work-shared/token"), pod("bad", "exit 7")], namespace)
    wait_for(
        "pod 'good' to succeed",
        lambda: get("pod", "good", namespace)["status"].get("phase") == "Succeeded",
    )
    assert "init-was-here" in kubectl("logs", "good", "-c", "main", "-n", namespace)
    failed = wait_for(
        "pod 'bad' to fail in its init container",
        lambda: (p := get("pod", "bad", namespace))["status"].get("phase") == "Failed" and p,
    )
    init = failed["status"]["initContainerStatuses"][0]["state"]["terminated"]
    assert init["exitCode"] == 7
    assert "running" not in failed["status"]["containerStatuses"][0]["state"]


def test_kubectl_exec(namespace: str) -> None:
    apply([shell_pod("target", "exec sleep 1000")], namespace)
    wait_for("pod 'target' to be ready", partial(ready_pod, namespace, "target"))
    assert kubectl("exec", "-n", namespace, "target", "--", "hostname").strip() == "target"
    echoed = kubectl("exec", "-i", "-n", namespace, "target", "--", "cat", stdin="over stdin\n")
    assert echoed == "over stdin\n"
    err = kubectl_error(
        "exec", "-n", namespace, "target", "--", "sh", "-c", "echo oops >&2; exit 3"
    )
    assert "oops" in err and "exit code 3" in err, err


def test_host_network_pod(namespace: str) -> None:
    with socket.socket() as s:  # a free loopback port for the server
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "hostnet"},
        "spec": {
            "hostNetwork": True,
            "containers": [
                {
                    "name": "server",
                    "image": "flotilla-test/httpserver:1",
                    "env": [{"name": "PORT", "value": str(port)}],
                    "readinessProbe": {
                        "httpGet": {"path": "/ready", "port": port},
                        "periodSeconds": 1,
                    },
                }
            ],
        },
    }
    apply([pod], namespace)
    ready = wait_for("the host-network pod to be ready", partial(ready_pod, namespace, "hostnet"))
    assert ready["status"]["podIP"] == "127.0.0.1"
    info = json.loads(http(f"http://127.0.0.1:{port}/info"))
    assert info["hostname"] == ready["spec"]["nodeName"]
