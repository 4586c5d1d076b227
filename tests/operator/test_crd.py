"""The RaftCluster CRD: names, subresources, columns, and a schema that means what we say.

The OpenAPI schema is checked here with jsonschema (types, minimums, enums, unknown fields)
and with a small defaulting walk that does what the API server does. The CEL rules
(``x-kubernetes-validations``) are only checked for presence and wording here; the API
server itself proves them in the cluster tests.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from flotilla.operator import status
from flotilla.operator.model import with_defaults
from flotilla.operator.plan import plan

from .world import spec as planner_spec
from .world import world

ROOT = Path(__file__).resolve().parents[2]
CRD = yaml.safe_load((ROOT / "crds" / "raftcluster.yaml").read_text())
(VERSION,) = CRD["spec"]["versions"]
SCHEMA = VERSION["schema"]["openAPIV3Schema"]
SPEC = SCHEMA["properties"]["spec"]
SAMPLE = yaml.safe_load((ROOT / "manifests" / "sample-raftcluster.yaml").read_text())


def at(path: str) -> dict[str, Any]:
    node = SCHEMA
    for part in path.split("."):
        node = node["items"] if part == "[]" else node["properties"][part]
    return node  # type: ignore[no-any-return]


def to_jsonschema(node: Any) -> Any:
    """OpenAPI v3 as the API server reads it, for jsonschema: unknown fields rejected."""
    if isinstance(node, list):
        return [to_jsonschema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: to_jsonschema(v) for k, v in node.items() if not k.startswith("x-kubernetes-")}
    out.pop("nullable", None)
    if node.get("nullable"):
        out = {"anyOf": [out, {"type": "null"}]}
    elif (
        node.get("type") == "object"
        and "properties" in node
        and not node.get("x-kubernetes-preserve-unknown-fields")
        and node is not SCHEMA["properties"].get("metadata")
    ):
        out["additionalProperties"] = False
    return out


VALIDATOR = jsonschema.Draft7Validator(to_jsonschema(SCHEMA))


def defaulted(schema: dict[str, Any], obj: Any) -> Any:
    """Structural defaulting as the API server applies it, depth first."""
    obj = copy.deepcopy(obj)
    if isinstance(obj, dict) and "properties" in schema:
        for name, sub in schema["properties"].items():
            if name not in obj and "default" in sub:
                obj[name] = copy.deepcopy(sub["default"])
            if name in obj:
                obj[name] = defaulted(sub, obj[name])
    if isinstance(obj, list) and "items" in schema:
        obj = [defaulted(schema["items"], o) for o in obj]
    return obj


def cluster(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "flotilla.dev/v1alpha1",
        "kind": "RaftCluster",
        "metadata": {"name": "db", "namespace": "default"},
        "spec": {"version": "1.0.0", **spec},
    }


def errors(obj: dict[str, Any]) -> list[str]:
    return [e.message for e in VALIDATOR.iter_errors(defaulted(SCHEMA, obj))]


def test_names_and_scope() -> None:
    assert CRD["metadata"]["name"] == "raftclusters.flotilla.dev"
    assert CRD["spec"]["group"] == "flotilla.dev"
    assert CRD["spec"]["scope"] == "Namespaced"
    names = CRD["spec"]["names"]
    assert (names["kind"], names["plural"], names["singular"]) == (
        "RaftCluster",
        "raftclusters",
        "raftcluster",
    )
    assert names["shortNames"] == ["raftc"]  # "rc" is ReplicationController's
    assert VERSION["name"] == "v1alpha1" and VERSION["served"] and VERSION["storage"]


def test_status_and_scale_subresources() -> None:
    assert VERSION["subresources"]["status"] == {}
    assert VERSION["subresources"]["scale"] == {
        "specReplicasPath": ".spec.replicas",
        "statusReplicasPath": ".status.replicas",
        "labelSelectorPath": ".status.selector",
    }


def test_printer_columns() -> None:
    columns = {c["name"]: c["jsonPath"] for c in VERSION["additionalPrinterColumns"]}
    assert list(columns) == ["Replicas", "Ready", "Leader", "Version", "Phase", "Age"]
    assert columns["Replicas"] == ".spec.replicas"
    assert columns["Ready"] == ".status.readyReplicas"
    assert columns["Leader"] == ".status.leader"
    assert columns["Version"] == ".status.currentVersion"
    assert columns["Phase"] == ".status.phase"
    assert columns["Age"] == ".metadata.creationTimestamp"


def test_defaults_match_the_operators_own() -> None:
    spec = defaulted(SCHEMA, cluster())["spec"]
    assert spec == {
        "version": "1.0.0",
        "replicas": 3,
        "image": "flotilla/node",
        "storage": {"size": "1Gi"},
        "raft": {"heartbeatIntervalMs": 100, "electionTimeoutMs": 1000, "snapshotCount": 10000},
        "quotaBytes": 2147483648,
        "pvcRetentionPolicy": "Retain",
    }
    mine = with_defaults({"version": "1.0.0"})
    assert {k: mine[k] for k in spec} == spec


def test_the_sample_is_valid() -> None:
    assert SAMPLE["kind"] == "RaftCluster" and SAMPLE["spec"]["replicas"] == 3
    assert errors(SAMPLE) == []


def test_a_full_spec_is_valid() -> None:
    full = cluster(
        replicas=5,
        image="registry.local:5000/flotilla/node",
        storage={"size": "20Gi", "storageClassName": "fast"},
        resources={"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"cpu": 2}},
        podTemplate={
            "labels": {"team": "a"},
            "annotations": {"x": "y"},
            "affinity": {"podAntiAffinity": {"anything": ["goes"]}},
            "tolerations": [{"key": "k", "operator": "Exists", "effect": "NoSchedule"}],
            "nodeSelector": {"disk": "ssd"},
        },
        raft={
            "heartbeatIntervalMs": 50,
            "electionTimeoutMs": 500,
            "snapshotCount": 1,
            "leaderLeaseReads": True,
        },
        quotaBytes=8 * 1024**3,
        autoCompaction={"mode": "periodic", "retention": "1h30m"},
        corruptionCheck={"interval": "1h", "onStart": True},
        pvcRetentionPolicy="Delete",
        tls={"serverSecret": "s", "peerSecret": "p", "clientSecret": "c", "clientCertAuth": True},
    )
    assert errors(full) == []


@pytest.mark.parametrize(
    ("spec", "complaint"),
    [
        ({"replicas": 0}, "less than the minimum of 1"),
        ({"pvcRetentionPolicy": "Keep"}, "is not one of ['Retain', 'Delete']"),
        ({"raft": {"heartbeatIntervalMs": 5}}, "less than the minimum of 10"),
        ({"raft": {"snapshotCount": 0}}, "less than the minimum of 1"),
        ({"raft": {"leaderLeaseReads": "yes"}}, "is not of type 'boolean'"),
        ({"autoCompaction": {"retention": "1d"}}, "does not match"),
        ({"autoCompaction": {"retention": "-1"}}, "does not match"),
        ({"autoCompaction": {"mode": "hourly", "retention": "1"}}, "is not one of"),
        ({"autoCompaction": {"mode": "periodic"}}, "'retention' is a required property"),
        ({"corruptionCheck": {"interval": "1d"}}, "does not match"),
        ({"corruptionCheck": {"onStart": "yes"}}, "is not of type 'boolean'"),
        ({"corruptionCheck": {"every": "1h"}}, "Additional properties are not allowed"),
        ({"replica": 3}, "Additional properties are not allowed ('replica' was unexpected)"),
        ({"storage": {"size": "1Gi", "class": "x"}}, "Additional properties are not allowed"),
        ({"podTemplate": {"labels": {"a": 1}}}, "is not of type 'string'"),
        ({"version": ""}, "should be non-empty"),
        ({"tls": {"clientCertAuth": "yes"}}, "is not of type 'boolean'"),
        ({"tls": {"serverSecret": ""}}, "should be non-empty"),
        ({"tls": {"ca": "x"}}, "Additional properties are not allowed ('ca' was unexpected)"),
    ],
)
def test_invalid_specs_are_rejected(spec: dict[str, Any], complaint: str) -> None:
    found = errors(cluster(**spec))
    assert any(complaint in e for e in found), found


def test_version_is_required() -> None:
    obj = cluster()
    del obj["spec"]["version"]
    assert any("'version' is a required property" in e for e in errors(obj))


def test_cel_rules_are_there_and_speak_plainly() -> None:
    rules = {}

    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict):
            for r in node.get("x-kubernetes-validations", []):
                assert r.get("message"), f"rule at {path} has no message"
                rules[path] = r
            for key, sub in node.get("properties", {}).items():
                walk(sub, f"{path}.{key}")
            if "items" in node:
                walk(node["items"], f"{path}[]")

    walk(SCHEMA, "")
    assert rules[".spec.storage"] == {"rule": "self == oldSelf", "message": "storage is immutable"}
    assert "matches('^[0-9]+$')" in rules[".spec.autoCompaction"]["rule"]
    raft = rules[".spec.raft"]
    assert "self.electionTimeoutMs >= 5 * self.heartbeatIntervalMs" in raft["rule"]
    assert "at least 5 times" in raft["message"]
    assert "DNS label" in rules[""]["message"]
    assert "without a tag" in rules[".spec.image"]["message"]
    assert "quantity" in rules[".spec.storage.size"]["message"]


def test_tls_rules_keep_it_fixed_and_all_or_none_of_the_secrets() -> None:
    tls = at("spec.tls")
    fixed, together = tls["x-kubernetes-validations"]
    assert fixed["rule"] == "self == oldSelf" and "tls is immutable" in fixed["message"]
    assert "has(self.serverSecret) == has(self.peerSecret)" in together["rule"]
    assert "name all three" in together["message"]
    assert tls["properties"]["clientCertAuth"]["default"] is True


def test_structural_no_unknown_fields_kept_but_where_kubernetes_types_go() -> None:
    kept = []

    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict):
            if node.get("x-kubernetes-preserve-unknown-fields"):
                kept.append(path)
            for key, sub in node.get("properties", {}).items():
                walk(sub, f"{path}.{key}")
            if "items" in node:
                walk(node["items"], f"{path}[]")
            if isinstance(node.get("additionalProperties"), dict):
                walk(node["additionalProperties"], f"{path}{{}}")

    walk(SCHEMA, "")
    assert sorted(kept) == [".spec.podTemplate.affinity", ".spec.podTemplate.tolerations[]"]


def test_resources_quantities_take_ints_and_strings() -> None:
    limits = at("spec.resources.limits")["additionalProperties"]
    assert limits["x-kubernetes-int-or-string"] is True


def test_status_schema_has_every_field_the_operator_writes() -> None:
    st = at("status")["properties"]
    for field in (
        "observedGeneration",
        "replicas",
        "readyReplicas",
        "selector",
        "leader",
        "members",
        "currentVersion",
        "phase",
        "operation",
        "conditions",
    ):
        assert field in st
    assert set(at("status.members.[]")["properties"]) == {
        "name",
        "id",
        "role",
        "healthy",
        "appliedIndex",
        "version",
    }
    assert at("status.members.[].role")["enum"] == ["voter", "learner"]
    assert set(at("status.operation")["properties"]) == {
        "type",
        "target",
        "step",
        "startedAt",
        "message",
    }
    cond = at("status.conditions.[]")
    assert set(cond["properties"]) == {
        "type",
        "status",
        "reason",
        "message",
        "lastTransitionTime",
        "observedGeneration",
    }
    assert cond["required"] == ["type", "status"]
    assert at("status.conditions")["x-kubernetes-list-map-keys"] == ["type"]


@pytest.mark.parametrize(
    "observed",
    [
        world(),
        world(learners=(3,), unhealthy=(3,), sts=4),
        world(leader=None, unhealthy=(1, 2)),
        world(cluster=False, state="new", leader=None),
    ],
)
def test_the_status_the_operator_writes_fits_the_schema(observed: Any) -> None:
    sp = planner_spec(replicas=5)
    obj = cluster()
    obj["status"] = status.build(sp, observed, plan(sp, observed), previous={})
    assert errors(obj) == []
