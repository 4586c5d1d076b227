"""The operator as shipped: ``kubectl apply -k manifests/``, running as a pod.

The Deployment runs under its own ServiceAccount with the ClusterRole of ``manifests/rbac.yaml``
(the local kubelet mounts the account's token; ``tests/kube/images.yaml`` maps
``flotilla/operator`` to the installed code). A cluster with ``pvcRetentionPolicy: Delete``
is created, scaled 1 -> 3 -> 1 and deleted through it: every kind of step the operator takes
(objects created and patched, learners added, pods and claims deleted, status, Events) must
pass RBAC, and with that policy no claim outlives its member or the cluster.

Runs after ``test_operator.py`` (whose operator and clusters are gone by then): the operator
watches every namespace, as shipped.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import yaml

from tests.kube.kubectl import get, kubectl, wait_for
from tests.kube.localkube.config import REPO_ROOT
from tests.kube.test_operator import NAME, SAMPLE, converged, endpoints, etcdctl, events

pytestmark = pytest.mark.kube

MANIFESTS = REPO_ROOT / "manifests"
SYSTEM = "flotilla-system"
ACCOUNT = f"system:serviceaccount:{SYSTEM}:flotilla-operator"


@pytest.fixture(scope="module")
def shipped_operator(crd: None) -> Iterator[None]:
    # A namespace deleted by an earlier run may still be terminating: nothing can be created
    # in it until it is gone.
    wait_for(
        f"namespace {SYSTEM} of an earlier run to go",
        lambda: not kubectl("get", "namespace", SYSTEM, "--ignore-not-found").strip(),
        timeout=90,
    )
    kubectl("apply", "-k", str(MANIFESTS))
    try:
        kubectl("rollout", "status", "deployment/flotilla-operator", "-n", SYSTEM, "--timeout=90s")
        yield
    finally:
        # The documented order: RaftClusters first, while the operator still runs to remove
        # its finalizers (the test deletes its own; this catches one a failure left behind).
        print(kubectl("logs", "deployment/flotilla-operator", "-n", SYSTEM, check=False)[-3000:])
        kubectl("delete", "raftclusters", "--all", "-A", "--timeout=60s", check=False)
        kubectl("delete", "namespace", SYSTEM, "--wait=false", check=False)
        kubectl("delete", "clusterrolebinding,clusterrole", "flotilla-operator", check=False)


def test_rbac_grants_the_steps_and_no_more(shipped_operator: None) -> None:
    def can(verb: str, resource: str, ns: str = "default") -> bool:
        out = kubectl("auth", "can-i", verb, resource, "-n", ns, f"--as={ACCOUNT}", check=False)
        return out.strip() == "yes"

    assert can("patch", "raftclusters.flotilla.dev/status")
    assert can("delete", "pods") and can("delete", "persistentvolumeclaims")
    # Least privilege: what goes by owner references is never deleted by the operator, and
    # nothing outside what a cluster is made of is reachable.
    assert not can("delete", "statefulsets.apps")
    assert not can("delete", "raftclusters.flotilla.dev")
    # Secrets: read and create (spec.tls), never list, change or delete them.
    assert can("get", "secrets") and can("create", "secrets")
    assert not can("list", "secrets") and not can("delete", "secrets")
    assert not can("patch", "secrets")
    assert not can("create", "pods")


def pod_logs(ns: str) -> str:
    """Every member's log, for a person reading a failure."""
    out = []
    for pod in get("pods", None, ns)["items"]:
        name = pod["metadata"]["name"]
        out.append(f"--- {name} ---\n" + kubectl("logs", name, "-n", ns, check=False)[-1500:])
    return "\n".join(out)


def test_operator_pod_runs_a_cluster_and_claims_follow_the_delete_policy(
    shipped_operator: None, namespace: str
) -> None:
    ns = namespace
    doc = yaml.safe_load(SAMPLE.read_text())
    doc["spec"].update(replicas=1, pvcRetentionPolicy="Delete")
    kubectl("apply", "-n", ns, "-f", "-", stdin=json.dumps(doc))
    wait_for("1 Ready member with a leader", lambda: converged(ns, 1), timeout=90)
    etcdctl("put", "greeting", "hello from the pod", endpoint=endpoints(ns)[0])

    kubectl("scale", f"raftcluster/{NAME}", "-n", ns, "--replicas=3")
    try:
        wait_for("3 Ready voters", lambda: converged(ns, 3), timeout=90)
    except AssertionError:
        print(pod_logs(ns))
        raise
    kubectl("scale", f"raftcluster/{NAME}", "-n", ns, "--replicas=1")

    def shrunk() -> bool:
        converged(ns, 1)
        claims = sorted(c["metadata"]["name"] for c in get("pvc", None, ns)["items"])
        assert claims == [f"data-{NAME}-0"], f"claims {claims}"  # Delete: released ones go
        return True

    wait_for("1 voter and one claim", shrunk, timeout=90)
    assert etcdctl("get", "greeting", "--print-value-only", endpoint=endpoints(ns)[0]).strip() == (
        "hello from the pod"
    )
    told = events(ns)
    reasons = [r for r, _ in told]
    assert "StepFailed" not in reasons, told  # a forbidden call would be a failed step
    assert {"AddingLearner", "Reconfiguring", "DeletingClaims"} <= set(reasons), told
    logs = kubectl("logs", "deployment/flotilla-operator", "-n", SYSTEM)
    # A request its RBAC refuses names the account ("User ... cannot ...").
    assert f'User "{ACCOUNT}" cannot' not in logs, logs[-2000:]
    operator_pod = get("pods", None, SYSTEM)["items"][0]
    assert operator_pod["status"]["containerStatuses"][0]["restartCount"] == 0  # liveness holds

    kubectl("delete", "raftcluster", NAME, "-n", ns, "--timeout=60s")

    def all_gone() -> bool:
        left = [
            f"{kind}/{o['metadata']['name']}"
            for kind in ("statefulsets", "pods", "pvc")
            for o in get(kind, None, ns)["items"]
        ]
        assert not left, f"still there: {left}"
        return True

    # Delete: the StatefulSet controller made the claims its own, so they go with it.
    wait_for("the cluster's objects and claims to go", all_gone, timeout=120)
