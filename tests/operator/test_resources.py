"""The builders: what a RaftCluster turns into, and that flotilla-node accepts its flags."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from flotilla.node.config import parse
from flotilla.operator import readers, resources
from flotilla.operator.model import (
    CONFIG_HASH_ANNOTATION,
    MEMBER_ID_ANNOTATION,
    Spec,
    config_hash,
    ordinal_of,
)

BODY: dict[str, Any] = {
    "apiVersion": "flotilla.dev/v1alpha1",
    "kind": "RaftCluster",
    "metadata": {
        "name": "db",
        "namespace": "prod",
        "uid": "0123abcd-4567-89ef-0123-456789abcdef",
        "generation": 4,
    },
    "spec": {"replicas": 3, "version": "1.2.0"},
}


def body(**spec: Any) -> dict[str, Any]:
    out = copy.deepcopy(BODY)
    out["spec"].update(spec)
    return out


def container(sts: dict[str, Any]) -> dict[str, Any]:
    (c,) = sts["spec"]["template"]["spec"]["containers"]
    return c  # type: ignore[no-any-return]


def flags(sts: dict[str, Any]) -> dict[str, str]:
    return dict(a.removeprefix("--").split("=", 1) for a in container(sts)["args"])


def test_every_object_is_owned_by_the_cluster() -> None:
    owner = {
        "apiVersion": "flotilla.dev/v1alpha1",
        "kind": "RaftCluster",
        "name": "db",
        "uid": BODY["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }
    for kind in resources.KINDS:
        obj = resources.build(BODY, kind)
        assert obj["metadata"]["ownerReferences"] == [owner], kind
        assert obj["metadata"]["namespace"] == "prod"
        assert obj["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "flotilla-operator"


def test_peer_service_is_headless_and_publishes_members_before_they_are_ready() -> None:
    svc = resources.peer_service(BODY)
    assert svc["metadata"]["name"] == "db-peer"
    assert svc["spec"]["clusterIP"] == "None"
    assert svc["spec"]["publishNotReadyAddresses"] is True
    ports = {p["name"]: p["port"] for p in svc["spec"]["ports"]}
    assert ports == {"peer": 2380, "client": 2379}
    assert svc["spec"]["selector"] == {
        "app.kubernetes.io/name": "flotilla",
        "app.kubernetes.io/instance": "db",
    }


def test_client_service_serves_2379() -> None:
    svc = resources.client_service(BODY)
    assert svc["metadata"]["name"] == "db"
    assert [p["port"] for p in svc["spec"]["ports"]] == [2379]
    assert "clusterIP" not in svc["spec"]


def test_statefulset_shape() -> None:
    sts = resources.statefulset(BODY)
    spec = sts["spec"]
    assert sts["metadata"]["name"] == "db"
    assert spec["replicas"] == 3
    assert spec["serviceName"] == "db-peer"
    assert spec["podManagementPolicy"] == "Parallel"
    assert spec["updateStrategy"] == {"type": "OnDelete"}
    assert spec["persistentVolumeClaimRetentionPolicy"] == {
        "whenDeleted": "Retain",
        "whenScaled": "Retain",
    }
    assert spec["selector"]["matchLabels"] == resources.selector_labels("db")
    (claim,) = spec["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "data"
    assert claim["spec"]["resources"]["requests"]["storage"] == "1Gi"
    assert "storageClassName" not in claim["spec"]
    pod = spec["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] == 30
    c = container(sts)
    assert c["name"] == "node"
    assert c["image"] == "flotilla/node:1.2.0"
    assert c["command"] == ["flotilla-node"]
    assert c["volumeMounts"] == [{"name": "data", "mountPath": "/var/lib/flotilla"}]


def test_storage_and_retention_come_from_the_spec() -> None:
    b = body(storage={"size": "20Gi", "storageClassName": "fast"}, pvcRetentionPolicy="Delete")
    spec = resources.statefulset(b)["spec"]
    (claim,) = spec["volumeClaimTemplates"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "20Gi"
    assert claim["spec"]["storageClassName"] == "fast"
    # Scale-down claims are the planner's business; deletion of the cluster follows the spec.
    assert spec["persistentVolumeClaimRetentionPolicy"] == {
        "whenDeleted": "Delete",
        "whenScaled": "Retain",
    }


def test_node_flags_etcd_style() -> None:
    f = flags(resources.statefulset(BODY))
    host = "$(POD_NAME).db-peer.prod.svc.cluster.local"
    assert f["name"] == "$(POD_NAME)"
    assert f["data-dir"] == "/var/lib/flotilla/data"
    assert f["listen-client-urls"] == "http://0.0.0.0:2379"
    assert f["advertise-client-urls"] == f"http://{host}:2379"
    assert f["listen-peer-urls"] == "http://0.0.0.0:2380"
    assert f["initial-advertise-peer-urls"] == f"http://{host}:2380"
    assert f["initial-cluster"] == ",".join(
        f"db-{k}=http://db-{k}.db-peer.prod.svc.cluster.local:2380" for k in range(3)
    )
    assert f["initial-cluster-state"] == "new"
    assert f["initial-cluster-token"] == "prod-db-0123abcd"
    assert f["heartbeat-interval"] == "100"
    assert f["election-timeout"] == "1000"
    assert f["snapshot-count"] == "10000"
    assert f["quota-backend-bytes"] == str(2 * 1024**3)
    assert f["listen-metrics-urls"] == "http://0.0.0.0:2381"


def test_raft_settings_and_quota_reach_the_flags() -> None:
    b = body(raft={"heartbeatIntervalMs": 50, "electionTimeoutMs": 500}, quotaBytes=1 << 30)
    f = flags(resources.statefulset(b))
    assert (f["heartbeat-interval"], f["election-timeout"]) == ("50", "500")
    assert f["snapshot-count"] == "10000"  # defaults fill what the spec leaves out
    assert f["quota-backend-bytes"] == str(1 << 30)


def test_leader_lease_reads_reach_the_flags_only_when_asked_for() -> None:
    assert "leader-lease-reads" not in flags(resources.statefulset(BODY))
    off = body(raft={"leaderLeaseReads": False})
    assert "leader-lease-reads" not in flags(resources.statefulset(off))
    on = body(raft={"leaderLeaseReads": True})
    assert flags(resources.statefulset(on))["leader-lease-reads"] == "true"
    assert config_hash(on["spec"]) != config_hash(BODY["spec"])
    assert config_hash(off["spec"]) == config_hash(BODY["spec"])  # no roll for spelling it out


def test_auto_compaction_reaches_the_flags_only_when_asked_for() -> None:
    assert "auto-compaction-retention" not in flags(resources.statefulset(BODY))
    hourly = body(autoCompaction={"retention": "1"})
    f = flags(resources.statefulset(hourly))
    assert (f["auto-compaction-mode"], f["auto-compaction-retention"]) == ("periodic", "1")
    by_revision = body(autoCompaction={"mode": "revision", "retention": "10000"})
    f = flags(resources.statefulset(by_revision))
    assert (f["auto-compaction-mode"], f["auto-compaction-retention"]) == ("revision", "10000")
    assert config_hash(hourly["spec"]) != config_hash(BODY["spec"])
    # The API server fills in the default mode; a body that spells it out is the same spec.
    spelled = body(autoCompaction={"mode": "periodic", "retention": "1"})
    assert config_hash(spelled["spec"]) == config_hash(hourly["spec"])


def test_corruption_checks_reach_the_flags_only_when_asked_for() -> None:
    f = flags(resources.statefulset(BODY))
    assert "corrupt-check-time" not in f and "experimental-initial-corrupt-check" not in f
    both = body(corruptionCheck={"interval": "1h", "onStart": True})
    f = flags(resources.statefulset(both))
    assert (f["corrupt-check-time"], f["experimental-initial-corrupt-check"]) == ("1h", "true")
    assert config_hash(both["spec"]) != config_hash(BODY["spec"])
    off = flags(resources.statefulset(body(corruptionCheck={"interval": "0", "onStart": False})))
    assert "corrupt-check-time" not in off and "experimental-initial-corrupt-check" not in off
    # What the pods get, the member parses.
    args = container(resources.statefulset(both))["args"]
    cfg = parse([a for a in args if "corrupt" in a], environ={})
    assert (cfg.corrupt_check_seconds, cfg.initial_corrupt_check) == (3600.0, True)


def test_pods_created_after_the_bootstrap_join_an_existing_cluster() -> None:
    sts = resources.statefulset(BODY, replicas=5, initial_cluster_state="existing")
    f = flags(sts)
    assert f["initial-cluster-state"] == "existing"
    assert f["initial-cluster"].count("=http://") == 5
    assert sts["spec"]["replicas"] == 5


@pytest.mark.parametrize("ordinal", [0, 2])
def test_flotilla_node_accepts_the_flags(ordinal: int) -> None:
    """What the kubelet runs (after $(POD_NAME) expansion) parses as a valid member."""
    sts = resources.statefulset(BODY)
    pod = f"db-{ordinal}"
    args = [a.replace("$(POD_NAME)", pod) for a in container(sts)["args"]]
    cfg = parse(args, environ={})
    assert cfg.name == pod
    assert [m.name for m in cfg.initial_cluster] == ["db-0", "db-1", "db-2"]
    assert cfg.initial_cluster_state == "new"
    assert cfg.heartbeat_interval_ms == 100 and cfg.election_timeout_ms == 1000
    assert cfg.listen_metrics_urls == ("http://0.0.0.0:2381",)


def test_env_from_the_downward_api() -> None:
    env = {
        e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"]
        for e in container(resources.statefulset(BODY))["env"]
    }
    assert env == {
        "POD_NAME": "metadata.name",
        "POD_NAMESPACE": "metadata.namespace",
        "POD_IP": "status.podIP",
    }


def test_probes() -> None:
    c = container(resources.statefulset(BODY))
    ready, live = c["readinessProbe"], c["livenessProbe"]
    assert ready["httpGet"] == {"path": "/readyz", "port": 2381}
    # Liveness never depends on a leader (/health would restart every member of a cluster
    # that lost quorum); /livez fails only when the member's loop is stuck.
    assert live["httpGet"] == {"path": "/livez", "port": 2381}
    # A slow start or a loaded machine must not get members killed: a minute, not seconds.
    assert live["periodSeconds"] * live["failureThreshold"] >= 60
    assert live["failureThreshold"] > ready["failureThreshold"]


def test_pod_template_overrides_merge_but_cannot_break_the_selector() -> None:
    b = body(
        podTemplate={
            "labels": {"team": "storage", "app.kubernetes.io/instance": "hijack"},
            "annotations": {"prometheus.io/scrape": "true"},
            "nodeSelector": {"disk": "ssd"},
            "tolerations": [{"key": "dedicated", "operator": "Exists"}],
            "affinity": {"podAntiAffinity": {}},
        },
        resources={"requests": {"cpu": "500m", "memory": "1Gi"}},
    )
    tpl = resources.statefulset(b)["spec"]["template"]
    assert tpl["metadata"]["labels"]["team"] == "storage"
    assert tpl["metadata"]["labels"]["app.kubernetes.io/instance"] == "db"
    assert tpl["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
    assert tpl["metadata"]["annotations"][CONFIG_HASH_ANNOTATION] == config_hash(b["spec"])
    assert tpl["spec"]["nodeSelector"] == {"disk": "ssd"}
    assert tpl["spec"]["tolerations"] == [{"key": "dedicated", "operator": "Exists"}]
    assert tpl["spec"]["affinity"] == {"podAntiAffinity": {}}
    assert container({"spec": {"template": tpl}})["resources"] == {
        "requests": {"cpu": "500m", "memory": "1Gi"}
    }


@pytest.mark.parametrize(("replicas", "min_available"), [(1, 1), (2, 2), (3, 2), (5, 3), (7, 4)])
def test_disruption_budget_keeps_a_quorum(replicas: int, min_available: int) -> None:
    pdb = resources.pod_disruption_budget(body(replicas=replicas))
    assert pdb["apiVersion"] == "policy/v1"
    assert pdb["spec"]["minAvailable"] == min_available
    assert pdb["spec"]["selector"]["matchLabels"] == resources.selector_labels("db")


@pytest.mark.parametrize(
    ("spec_replicas", "statefulset", "min_available"),
    [(3, 5, 3), (1, 3, 2), (5, 3, 3), (3, 3, 2), (3, None, 2)],
)
def test_disruption_budget_covers_the_larger_of_spec_and_statefulset(
    spec_replicas: int, statefulset: int | None, min_available: int
) -> None:
    """While 5 -> 3 runs, five voters still need three; while 3 -> 5 runs, five will."""
    b = body(replicas=spec_replicas)
    pdb = resources.build(b, resources.PDB, resources.budget_pods(b, statefulset))
    assert pdb["spec"]["minAvailable"] == min_available


def test_config_hash_follows_what_shapes_pods_and_nothing_else() -> None:
    base = config_hash(BODY["spec"])
    assert config_hash(body(replicas=7)["spec"]) == base
    assert config_hash(body(storage={"size": "9Gi"})["spec"]) == base
    assert config_hash(body(pvcRetentionPolicy="Delete")["spec"]) == base
    assert config_hash(body(version="1.3.0")["spec"]) != base
    assert config_hash(body(image="registry.local/flotilla")["spec"]) != base
    assert config_hash(body(resources={"limits": {"cpu": "2"}})["spec"]) != base
    assert config_hash(body(raft={"snapshotCount": 5})["spec"]) != base
    # Spelling out a default is the same configuration.
    assert config_hash(body(raft={"heartbeatIntervalMs": 100})["spec"]) == base


def test_spec_from_body() -> None:
    s = Spec.from_body(BODY)
    assert (s.name, s.namespace, s.replicas, s.version) == ("db", "prod", 3, "1.2.0")
    assert s.image_ref == "flotilla/node:1.2.0"
    assert s.pvc_retention == "Retain"
    assert s.generation == 4
    assert s.config_hash == config_hash(BODY["spec"])


def test_ordinals_from_names_and_peer_urls() -> None:
    assert ordinal_of("db", "db-4") == 4
    assert ordinal_of("db", resources.peer_url("db", "prod", 12)) == 12
    assert ordinal_of("db", "https://db-1.db-peer.prod.svc:2380") == 1
    assert ordinal_of("db", "dbx-1") is None
    assert ordinal_of("db", "db-peer") is None
    assert ordinal_of("my-db", "my-db-0") == 0
    assert readers.member_ordinal("db", "", [resources.peer_url("db", "prod", 3)]) == 3
    assert readers.member_ordinal("db", "stranger", ["http://10.0.0.9:2380"]) is None


def test_readers_read_back_what_the_builders_wrote() -> None:
    sts = resources.statefulset(BODY, replicas=4, initial_cluster_state="existing")
    seen = readers.read_statefulset(sts)
    assert seen.replicas == 4
    assert seen.initial_cluster_state == "existing"
    assert seen.config_hash == config_hash(BODY["spec"])

    tpl = sts["spec"]["template"]
    pod = {
        "metadata": {
            "name": "db-2",
            "annotations": tpl["metadata"]["annotations"],
            "creationTimestamp": "2026-01-02T03:04:05Z",
        },
        "spec": tpl["spec"],
        "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]},
    }
    p = readers.read_pod("db", pod)
    assert p is not None
    assert (p.ordinal, p.phase, p.ready, p.version) == (2, "Running", True, "1.2.0")
    assert p.config_hash == seen.config_hash
    assert p.created_at == readers.timestamp("2026-01-02T03:04:05Z") > 0
    assert not p.deleting
    assert readers.read_pod("db", {"metadata": {"name": "other-0"}}) is None

    pvc = {
        "metadata": {
            "name": resources.pvc_name("db", 1),
            "annotations": {MEMBER_ID_ANNOTATION: "8e9e05c52164694d"},
            "deletionTimestamp": "2026-01-02T03:04:05Z",
        }
    }
    c = readers.read_pvc("db", pvc)
    assert c is not None
    assert (c.ordinal, c.member_id, c.deleting) == (1, 0x8E9E05C52164694D, True)
    assert readers.read_pvc("db", {"metadata": {"name": "data-other-1"}}) is None


@pytest.mark.parametrize(
    ("image", "tag"),
    [
        ("flotilla/node:1.2.0", "1.2.0"),
        ("registry:5000/flotilla/node:v2", "v2"),
        ("registry:5000/flotilla/node", ""),
        ("flotilla/node@sha256:abc", ""),
    ],
)
def test_image_tag(image: str, tag: str) -> None:
    assert readers.image_tag(image) == tag


def test_label_selector_for_the_scale_subresource() -> None:
    assert resources.label_selector("db") == (
        "app.kubernetes.io/name=flotilla,app.kubernetes.io/instance=db"
    )


def test_drift_ignores_what_the_server_fills_in() -> None:
    desired = resources.client_service(BODY)
    live = copy.deepcopy(desired)
    live["spec"]["clusterIP"] = "10.96.0.17"
    live["spec"]["ports"][0]["protocol"] = "TCP"
    live["metadata"]["labels"]["added-by-someone"] = "x"
    assert not readers.drifted(desired, live)
    live["spec"]["ports"][0]["port"] = 12379
    assert readers.drifted(desired, live)


def test_a_budget_left_from_another_size_has_drifted() -> None:
    live = resources.pod_disruption_budget(body(replicas=3))
    assert not readers.drifted(resources.pod_disruption_budget(body(replicas=3)), live)
    assert readers.drifted(resources.pod_disruption_budget(body(replicas=5)), live)
    del live["metadata"]["labels"]["app.kubernetes.io/managed-by"]
    assert readers.drifted(resources.pod_disruption_budget(body(replicas=3)), live)
