"""The operator's metrics: what a pass records, and the HTTP endpoint that serves them."""

from __future__ import annotations

import urllib.request

from prometheus_client import CollectorRegistry

from flotilla.operator.metrics import METRICS, OperatorMetrics, serve

from ..node.procs import free_ports, wait_for


def test_a_pass_records_its_step_and_the_clusters_state() -> None:
    reg = CollectorRegistry()
    m = OperatorMetrics(reg)
    status = {"phase": "Scaling", "replicas": 5, "readyReplicas": 3}
    m.record("ns", "db", "AddLearner", status, False, 0.2, 0.15)
    m.record("ns", "db", "AddLearner", status, True, 0.3, 0.25)
    m.record("ns", "db", "WaitFor", {**status, "phase": "Running"}, False, 0.1, None)

    def get(name: str, **labels: str) -> float | None:
        return reg.get_sample_value(name, labels)

    cluster = {"namespace": "ns", "cluster": "db"}
    assert get("flotilla_operator_reconcile_total", **cluster, step="AddLearner", result="ok") == 1
    assert (
        get("flotilla_operator_reconcile_total", **cluster, step="AddLearner", result="failed") == 1
    )
    assert get("flotilla_operator_step_duration_seconds_count", step="AddLearner") == 2
    assert get("flotilla_operator_step_duration_seconds_count", step="WaitFor") is None
    assert get("flotilla_operator_reconcile_duration_seconds_count") == 3
    assert get("flotilla_operator_cluster_phase", **cluster, phase="Running") == 1
    assert get("flotilla_operator_cluster_phase", **cluster, phase="Scaling") == 0
    assert get("flotilla_operator_cluster_members_ready", **cluster) == 3
    assert get("flotilla_operator_cluster_replicas", **cluster) == 5


def test_metrics_are_served_over_http() -> None:
    (port,) = free_ports(1)
    assert serve(port) == port
    METRICS.record(
        "prod", "web", "Done", {"phase": "Running", "readyReplicas": 3}, False, 0.01, None
    )

    def scraped() -> str | None:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
            text: str = resp.read().decode()
        return text if 'cluster="web"' in text else None

    text = wait_for("the operator's metrics endpoint", scraped, timeout=10)
    assert 'flotilla_operator_cluster_members_ready{cluster="web",namespace="prod"} 3.0' in text
    assert "flotilla_operator_reconcile_total{" in text
