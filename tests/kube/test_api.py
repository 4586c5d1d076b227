"""The API behaviours the operator depends on, served by the real kube-apiserver.

Custom resources with schema validation and status/scale subresources, optimistic
concurrency through resourceVersion, and garbage collection through ownerReferences.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.kube.kubectl import apply, get, get_or_none, kubectl, kubectl_error, wait_for

pytestmark = pytest.mark.kube
Obj = dict[str, Any]


@pytest.fixture
def widgets(namespace: str) -> Iterator[str]:
    """A namespaced CRD (unique per test) with status and scale subresources."""
    group = f"{namespace}.test.flotilla.io"
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"widgets.{group}"},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "spec": {
                                    "type": "object",
                                    "required": ["replicas"],
                                    "properties": {
                                        "replicas": {
                                            "type": "integer",
                                            "minimum": 1,
                                            "maximum": 7,
                                        }
                                    },
                                },
                                "status": {
                                    "type": "object",
                                    "properties": {
                                        "replicas": {"type": "integer"},
                                        "selector": {"type": "string"},
                                    },
                                },
                            },
                        }
                    },
                    "subresources": {
                        "status": {},
                        "scale": {
                            "specReplicasPath": ".spec.replicas",
                            "statusReplicasPath": ".status.replicas",
                            "labelSelectorPath": ".status.selector",
                        },
                    },
                }
            ],
        },
    }
    kubectl("apply", "-f", "-", stdin=json.dumps(crd))

    def established() -> bool:
        conditions = get("crd", f"widgets.{group}", None).get("status", {}).get("conditions", [])
        return any(c["type"] == "Established" and c["status"] == "True" for c in conditions)

    wait_for("the CRD to be established", established, timeout=30)
    yield f"widgets.{group}"
    kubectl("delete", "crd", f"widgets.{group}", "--wait=false", check=False)


def widget(group: str, name: str, replicas: int) -> Obj:
    return {
        "apiVersion": f"{group.split('.', 1)[1]}/v1",
        "kind": "Widget",
        "metadata": {"name": name},
        "spec": {"replicas": replicas},
    }


def test_schema_validation_rejects_invalid_objects(namespace: str, widgets: str) -> None:
    bad = json.dumps(widget(widgets, "w", 9))
    err = kubectl_error("apply", "-n", namespace, "-f", "-", stdin=bad)
    assert "spec.replicas" in err and "less than or equal to 7" in err, err
    missing = widget(widgets, "w", 1)
    del missing["spec"]["replicas"]
    err = kubectl_error("apply", "-n", namespace, "-f", "-", stdin=json.dumps(missing))
    assert "Required value" in err, err
    assert get_or_none(widgets, "w", namespace) is None


def test_scale_and_status_subresources(namespace: str, widgets: str) -> None:
    apply([widget(widgets, "w", 3)], namespace)
    kubectl("scale", widgets, "w", "--replicas=5", "-n", namespace)
    assert get(widgets, "w", namespace)["spec"]["replicas"] == 5

    status = {"status": {"replicas": 5, "selector": "app=w"}}
    kubectl(
        "patch", widgets, "w", "-n", namespace, "--subresource=status", "--type=merge",
        "-p", json.dumps(status),
    )  # fmt: skip
    # A write to the main resource cannot change status ...
    kubectl(
        "patch", widgets, "w", "-n", namespace, "--type=merge",
        "-p", json.dumps({"status": {"replicas": 1}}),
    )  # fmt: skip
    assert get(widgets, "w", namespace)["status"]["replicas"] == 5
    # ... and the scale subresource reads it.
    group = widgets.split(".", 1)[1]
    path = f"/apis/{group}/v1/namespaces/{namespace}/widgets/w/scale"
    scale = json.loads(kubectl("get", "--raw", path))
    assert scale["spec"]["replicas"] == 5 and scale["status"]["replicas"] == 5
    assert scale["status"]["selector"] == "app=w"


def test_stale_resource_version_conflicts(namespace: str, widgets: str) -> None:
    apply([widget(widgets, "w", 1)], namespace)
    stale = get(widgets, "w", namespace)
    kubectl("scale", widgets, "w", "--replicas=2", "-n", namespace)
    stale["spec"]["replicas"] = 3
    err = kubectl_error("replace", "-n", namespace, "-f", "-", stdin=json.dumps(stale))
    assert "the object has been modified" in err, err
    assert get(widgets, "w", namespace)["spec"]["replicas"] == 2


def test_owner_references_garbage_collection(namespace: str, widgets: str) -> None:
    apply([widget(widgets, "owner", 1)], namespace)
    owner = get(widgets, "owner", namespace)
    ref = {
        "apiVersion": owner["apiVersion"],
        "kind": "Widget",
        "name": "owner",
        "uid": owner["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }
    child = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "owned", "ownerReferences": [ref]},
        "data": {"k": "v"},
    }
    apply([child], namespace)
    kubectl("delete", widgets, "owner", "-n", namespace)
    wait_for(
        "the garbage collector to delete the owned ConfigMap",
        lambda: get_or_none("configmap", "owned", namespace) is None,
        timeout=60,
    )
