"""Prometheus metrics of a member, collected when scraped from the node's live state.

Reading state at scrape time (rather than updating gauges on every change) keeps the hot
path free of metric calls; only latency histograms are observed as events happen.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from .raft.core import Role

if TYPE_CHECKING:
    from .server import RaftNode

_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 1.0)


class NodeMetrics(Collector):
    def __init__(self, node: RaftNode) -> None:
        self.node = node
        self.registry = CollectorRegistry()
        self.registry.register(self)
        self.fsync = Histogram(
            "flotilla_disk_wal_fsync_duration_seconds",
            "Time to make one batch of Raft entries and hard state durable.",
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.apply = Histogram(
            "flotilla_server_apply_duration_seconds",
            "Time to apply one batch of committed entries.",
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )

        self.peer_rtt = Histogram(
            "flotilla_network_peer_round_trip_time_seconds",
            "Round trip of heartbeats to each peer (leader only).",
            ["to"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )

    def observe(self) -> None:
        """Move latencies the driver recorded since the last scrape into the histograms."""
        stats = self.node.stats
        for v in stats.fsync_seconds:
            self.fsync.observe(v)
        for v in stats.apply_seconds:
            self.apply.observe(v)
        for peer, v in stats.peer_rtt_seconds:
            self.peer_rtt.labels(to=f"{peer:x}").observe(v)
        stats.fsync_seconds.clear()
        stats.apply_seconds.clear()
        stats.peer_rtt_seconds.clear()

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        node = self.node
        core = node.core
        yield GaugeMetricFamily(
            "flotilla_server_has_leader", "1 if a leader is known.", value=int(core.lead != 0)
        )
        yield GaugeMetricFamily(
            "flotilla_server_is_leader",
            "1 if this member is the leader.",
            value=int(core.role == Role.LEADER),
        )
        yield CounterMetricFamily(
            "flotilla_server_leader_changes_seen",
            "Leader changes seen by this member.",
            value=node.stats.leader_changes,
        )
        yield GaugeMetricFamily("flotilla_server_term", "Current Raft term.", value=core.term)
        yield GaugeMetricFamily(
            "flotilla_server_commit_index", "Raft commit index.", value=core.commit
        )
        yield GaugeMetricFamily(
            "flotilla_server_applied_index", "Raft applied index.", value=core.applied
        )
        yield CounterMetricFamily(
            "flotilla_server_proposals_committed",
            "Proposals applied by this member.",
            value=node.stats.proposals_committed,
        )
        yield GaugeMetricFamily(
            "flotilla_server_proposals_pending",
            "Proposals waiting to be applied on this member.",
            value=len(node.waiters.proposals) + len(node.waiters.queued),
        )
        yield CounterMetricFamily(
            "flotilla_server_proposals_failed",
            "Proposals that failed (no leader, timeout, stop).",
            value=node.stats.proposals_failed,
        )

    def render(self) -> bytes:
        self.observe()
        return generate_latest(self.registry)
