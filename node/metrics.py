"""Prometheus metrics of a member, collected when scraped from the node's live state.

Reading state at scrape time (rather than updating gauges on every change) keeps the hot
path free of metric calls; only latency histograms are observed as events happen (the driver
appends durations to plain lists, moved into the histograms here).

Names follow etcd's wherever etcd has the same measurement (``etcd_server_has_leader``,
``etcd_disk_wal_fsync_duration_seconds``, ``grpc_server_handled_total``...), so existing etcd
dashboards and alerts work; the rest are ``flotilla_*``. README.md lists them all.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Histogram, disable_created_metrics, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from . import __version__
from .api.grpcmetrics import GrpcCounters
from .raft.core import Role

if TYPE_CHECKING:
    from .server import RaftNode

# No "_created" series beside every histogram: they double the output and no panel uses them.
disable_created_metrics()  # type: ignore[no-untyped-call]

_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 1.0)
_SNAPSHOT_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class NodeMetrics(Collector):
    def __init__(self, node: RaftNode, grpc_counters: GrpcCounters | None = None) -> None:
        self.node = node
        self.grpc = grpc_counters
        self.registry = CollectorRegistry()
        self.registry.register(self)
        # process_resident_memory_bytes, process_cpu_seconds_total, open fds...
        ProcessCollector(registry=self.registry)
        self.fsync = Histogram(
            "etcd_disk_wal_fsync_duration_seconds",
            "Time to make one batch of Raft entries and hard state durable (one synced write).",
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.apply = Histogram(
            "etcd_server_apply_duration_seconds",
            "Time to apply one batch of committed entries to the state machine.",
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.peer_rtt = Histogram(
            "etcd_network_peer_round_trip_time_seconds",
            "Round trip of heartbeats to each peer (measured by the leader).",
            ["To"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.snapshot_save = Histogram(
            "etcd_debugging_snap_save_total_duration_seconds",
            "Time to take a snapshot of the state machine and compact the log behind it.",
            buckets=_SNAPSHOT_BUCKETS,
            registry=self.registry,
        )
        self.snapshot_install = Histogram(
            "etcd_snap_db_save_total_duration_seconds",
            "Time to install a snapshot received from the leader.",
            buckets=_SNAPSHOT_BUCKETS,
            registry=self.registry,
        )

    def observe(self) -> None:
        """Move latencies the driver recorded since the last scrape into the histograms."""
        stats = self.node.stats
        for hist, values in (
            (self.fsync, stats.fsync_seconds),
            (self.apply, stats.apply_seconds),
            (self.snapshot_save, stats.snapshot_save_seconds),
            (self.snapshot_install, stats.snapshot_install_seconds),
        ):
            for v in values:
                hist.observe(v)
            values.clear()
        for peer, v in stats.peer_rtt_seconds:
            self.peer_rtt.labels(To=f"{peer:x}").observe(v)
        stats.peer_rtt_seconds.clear()

    def collect(self) -> Iterator[Metric]:
        node = self.node
        core = node.core
        stats = node.stats

        def gauge(name: str, text: str, value: float) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, text, value=value)

        def counter(name: str, text: str, value: float) -> CounterMetricFamily:
            return CounterMetricFamily(name, text, value=value)

        yield gauge("etcd_server_has_leader", "1 if a leader is known.", int(core.lead != 0))
        yield gauge(
            "etcd_server_is_leader", "1 if this member leads.", int(core.role == Role.LEADER)
        )
        is_learner = core.id in core.conf.learners and not core.conf.is_voter(core.id)
        yield gauge("etcd_server_is_learner", "1 if this member is a learner.", int(is_learner))
        yield counter(
            "etcd_server_leader_changes_seen",
            "Leader changes seen by this member.",
            stats.leader_changes,
        )
        ident = GaugeMetricFamily("etcd_server_id", "This member's id.", labels=["server_id"])
        ident.add_metric([f"{node.member_id:x}"], 1)
        yield ident
        version = GaugeMetricFamily(
            "etcd_server_version", "Which version is running.", labels=["server_version"]
        )
        version.add_metric([__version__], 1)
        yield version
        yield gauge("flotilla_server_term", "Current Raft term.", core.term)
        # etcd's names for these two are counters in name only: they are the Raft indexes.
        yield gauge(
            "etcd_server_proposals_committed_total",
            "Raft commit index (entries committed).",
            core.commit,
        )
        yield gauge(
            "etcd_server_proposals_applied_total",
            "Raft applied index (entries applied).",
            core.applied,
        )
        yield gauge(
            "etcd_server_proposals_pending",
            "Client proposals waiting to be committed and applied on this member.",
            len(node.waiters.proposals) + len(node.waiters.queued),
        )
        yield counter(
            "etcd_server_proposals_failed",
            "Client proposals that failed (no leader, timeout, stopping).",
            stats.proposals_failed,
        )
        yield counter(
            "flotilla_server_requests_applied",
            "Client write requests applied by this member's state machine.",
            stats.proposals_committed,
        )
        sm = node.sm
        yield gauge(
            "etcd_mvcc_db_total_size_in_bytes", "Size of the member's LevelDB files.", sm.db_size
        )
        yield gauge(
            "etcd_debugging_mvcc_current_revision",
            "The store's current revision.",
            sm.store.revision,
        )
        yield gauge(
            "etcd_debugging_mvcc_watcher_total",
            "Watchers open on this member.",
            sm.watch_hub.watcher_count,
        )
        yield gauge("flotilla_lease_active", "Leases currently granted.", len(sm.lessor))
        sent = CounterMetricFamily(
            "etcd_network_peer_sent_bytes",
            "Raft message bytes sent to each peer (since its stream was set up).",
            labels=["To"],
        )
        dropped = CounterMetricFamily(
            "etcd_network_peer_sent_failures",
            "Raft messages to each peer dropped (queue full or stream broken).",
            labels=["To"],
        )
        for mid, (nbytes, ndropped) in sorted(node.transport.peer_counters().items()):
            sent.add_metric([f"{mid:x}"], nbytes)
            dropped.add_metric([f"{mid:x}"], ndropped)
        yield sent
        yield dropped
        if self.grpc is not None:
            yield from self._grpc_families()

    def _grpc_families(self) -> Iterator[Metric]:
        assert self.grpc is not None
        labels = ["grpc_type", "grpc_service", "grpc_method"]
        started = CounterMetricFamily(
            "grpc_server_started", "Client RPCs started, by method.", labels=labels
        )
        for key, n in sorted(self.grpc.started.items()):
            started.add_metric(list(key), n)
        handled = CounterMetricFamily(
            "grpc_server_handled",
            "Client RPCs completed, by method and status code.",
            labels=[*labels, "grpc_code"],
        )
        for hkey, n in sorted(self.grpc.handled.items()):
            handled.add_metric(list(hkey), n)
        yield started
        yield handled

    def render(self) -> bytes:
        self.observe()
        return generate_latest(self.registry)
