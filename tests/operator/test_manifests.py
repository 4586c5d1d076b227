"""The deployable pieces: every manifest parses, kustomize finds its files, RBAC grants what
the operator's steps need and no more, and the images start the right programs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "manifests"


def docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def by_kind(path: Path) -> dict[str, dict[str, Any]]:
    return {d["kind"]: d for d in docs(path)}


@pytest.mark.parametrize(
    "path", sorted(MANIFESTS.glob("*.yaml")) + sorted((ROOT / "crds").glob("*.yaml")), ids=str
)
def test_every_manifest_parses(path: Path) -> None:
    assert all("kind" in d for d in docs(path))


@pytest.mark.parametrize("folder", [MANIFESTS, ROOT / "crds"], ids=str)
def test_kustomizations_list_files_that_exist(folder: Path) -> None:
    (k,) = docs(folder / "kustomization.yaml")
    for entry in k["resources"]:
        assert (folder / entry).exists(), entry


# (group, resource) -> verbs the operator uses: kopf's own needs, then one line per kind of
# step (CreateResources, UpdateTemplate, ScaleStatefulSet, DeletePod, BindPvc, DeletePvcs,
# status and Events, the certificates of spec.tls).
NEEDED = {
    ("apiextensions.k8s.io", "customresourcedefinitions"): {"list", "watch"},
    ("", "namespaces"): {"list", "watch"},
    ("flotilla.dev", "raftclusters"): {"get", "list", "watch", "patch"},
    ("flotilla.dev", "raftclusters/status"): {"get", "patch"},
    ("flotilla.dev", "raftclusters/scale"): {"get"},
    ("apps", "statefulsets"): {"get", "list", "watch", "create", "patch"},
    ("", "services"): {"get", "list", "watch", "create", "patch"},
    ("policy", "poddisruptionbudgets"): {"get", "list", "watch", "create", "patch"},
    ("", "pods"): {"get", "list", "watch", "delete"},
    ("", "persistentvolumeclaims"): {"get", "list", "watch", "patch", "delete"},
    ("", "events"): {"create"},
    ("", "secrets"): {"get", "create"},  # spec.tls: certificates made and read, never listed
}


def granted() -> dict[tuple[str, str], set[str]]:
    role = by_kind(MANIFESTS / "rbac.yaml")["ClusterRole"]
    out: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                out.setdefault((group, resource), set()).update(rule["verbs"])
    return out


def test_rbac_grants_what_the_steps_need() -> None:
    have = granted()
    for key, verbs in NEEDED.items():
        assert verbs <= have.get(key, set()), key


def test_rbac_is_least_privilege() -> None:
    have = granted()
    assert all("*" not in verbs for verbs in have.values())
    assert not any("*" in key for key in (g + r for g, r in have))
    allowed = set(NEEDED) | {("events.k8s.io", "events")}
    assert set(have) <= allowed, set(have) - allowed
    assert "pods/exec" not in {r for _, r in have}
    # Secrets by name only: no list or watch, which would show every Secret in the cluster.
    assert have[("", "secrets")] == {"get", "create"}
    # Owned objects go with their RaftCluster; the operator never deletes them itself.
    for owned in (("apps", "statefulsets"), ("", "services"), ("policy", "poddisruptionbudgets")):
        assert "delete" not in have[owned], owned


def test_the_operator_runs_as_its_service_account_with_the_handlers_module() -> None:
    rbac = by_kind(MANIFESTS / "rbac.yaml")
    deployment = by_kind(MANIFESTS / "operator.yaml")["Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == rbac["ServiceAccount"]["metadata"]["name"]
    (subject,) = rbac["ClusterRoleBinding"]["subjects"]
    assert subject["name"] == pod["serviceAccountName"]
    assert subject["namespace"] == deployment["metadata"]["namespace"]
    (container,) = pod["containers"]
    assert "--module=flotilla.operator.handlers" in container["args"]
    assert deployment["spec"]["replicas"] == 1
    assert pod["securityContext"]["runAsNonRoot"] is True


def test_images_start_the_right_programs() -> None:
    node = (ROOT / "Dockerfile.node").read_text()
    operator = (ROOT / "Dockerfile.operator").read_text()
    for text in (node, operator):
        assert "FROM python:3.11-slim" in text
    assert 'ENTRYPOINT ["flotilla-node"]' in node
    assert 'ENTRYPOINT ["kopf"]' in operator
    assert "--module=flotilla.operator.handlers" in operator
