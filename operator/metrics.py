"""The operator's own Prometheus metrics: passes, steps, and each cluster's state.

Served on their own port (``FLOTILLA_OPERATOR_METRICS_PORT``, default 8081; 0 turns them
off) by prometheus_client's HTTP server, started once at kopf's startup. ``record`` is called
at the end of every pass with what the pass already computed, so nothing is read twice.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client import start_http_server as _start

PHASES = ("Creating", "Bootstrapping", "Scaling", "Upgrading", "Repairing", "Running",
          "Degraded", "QuorumLost")  # fmt: skip
DEFAULT_PORT = 8081


class OperatorMetrics:
    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        cluster = ["namespace", "cluster"]
        self.passes = Counter(
            "flotilla_operator_reconcile",
            "Reconcile passes, by the step planned and whether carrying it out failed.",
            [*cluster, "step", "result"],
            registry=registry,
        )
        self.step_seconds = Histogram(
            "flotilla_operator_step_duration_seconds",
            "Time to carry out one step (Kubernetes and membership calls), by step.",
            ["step"],
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=registry,
        )
        self.pass_seconds = Histogram(
            "flotilla_operator_reconcile_duration_seconds",
            "Time of one whole pass: observe, plan, act, status.",
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=registry,
        )
        self.phase = Gauge(
            "flotilla_operator_cluster_phase",
            "1 for the cluster's current phase (status.phase), 0 for the others.",
            [*cluster, "phase"],
            registry=registry,
        )
        self.replicas = Gauge(
            "flotilla_operator_cluster_replicas",
            "Members the cluster's spec asks for.",
            cluster,
            registry=registry,
        )
        self.ready = Gauge(
            "flotilla_operator_cluster_members_ready",
            "Members whose pods are ready (status.readyReplicas).",
            cluster,
            registry=registry,
        )

    def record(
        self,
        namespace: str,
        name: str,
        step: str,
        status: Mapping[str, Any],
        failed: bool,
        pass_seconds: float,
        step_seconds: float | None,
    ) -> None:
        self.passes.labels(namespace, name, step, "failed" if failed else "ok").inc()
        self.pass_seconds.observe(pass_seconds)
        if step_seconds is not None:
            self.step_seconds.labels(step).observe(step_seconds)
        current = status.get("phase", "")
        for phase in {*PHASES, current} - {""}:
            self.phase.labels(namespace, name, phase).set(int(phase == current))
        self.replicas.labels(namespace, name).set(status.get("replicas", 0) or 0)
        self.ready.labels(namespace, name).set(status.get("readyReplicas", 0) or 0)


METRICS = OperatorMetrics()


def serve(port: int | None = None) -> int:
    """Start the metrics HTTP server (once); returns the port, 0 if turned off."""
    if port is None:
        port = int(os.environ.get("FLOTILLA_OPERATOR_METRICS_PORT", DEFAULT_PORT))
    if port:
        _start(port)
    return port
