"""A real member's /metrics: every documented name is there, and the values move.

The documented set is read from README.md's metrics table, so the table and the code cannot
drift apart silently.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from .procs import Proc, ProcessCluster, etcdctl, wait_for

README = Path(__file__).resolve().parents[2] / "README.md"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def documented() -> dict[str, str]:
    """name -> type, from README's metrics table."""
    text = README.read_text()
    table = text[text.index("| name | type | meaning |") :].split("\n\n", 1)[0]
    names = {}
    for row in table.splitlines()[2:]:
        first, kind = row.split("|")[1:3]
        for name in re.findall(r"`([a-z_]+)", first):
            names[name] = kind.strip()
    return names


def scrape(m: Proc) -> Samples:
    code, text = m.http("/metrics")
    assert code == 200, text
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    want = set(labels.items())
    found = [v for (n, ls), v in samples.items() if n == name and want <= ls]
    assert found, f"{name}{labels} not in /metrics"
    return sum(found)


def test_documented_metrics_are_exported_and_move(
    make_cluster: Callable[..., ProcessCluster],
) -> None:
    c = make_cluster(3)
    leader = c.wait_leader()
    eps = leader.endpoint
    before = scrape(leader)

    for i in range(20):
        etcdctl(eps, "put", f"k{i}", "v")
    bad = etcdctl(eps, "put", "", "v", check=False)  # etcd: key is not provided
    assert bad.returncode != 0
    lease = etcdctl(eps, "lease", "grant", "60").stdout.split()[1]
    watch = subprocess.Popen(
        ["etcdctl", f"--endpoints={eps}", "watch", "w"],
        env={"ETCDCTL_API": "3", "PATH": "/usr/bin:/bin"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        after = wait_for(
            "the watcher to show in /metrics",
            lambda: (s := scrape(leader)) and value(s, "etcd_debugging_mvcc_watcher_total") and s,
        )
    finally:
        watch.kill()
        watch.wait()

    # Every documented name is exported (histograms as their _bucket series), and nothing
    # undocumented is.
    names = {n for n, _ in after}
    docs = documented()
    for name, kind in docs.items():
        series = name + "_bucket" if kind == "histogram" else name
        assert series in names, f"documented {name} missing from the leader's /metrics"
    exported = {re.sub(r"_(bucket|sum|count)$", "", n) for n in names}
    undocumented = {
        n for n in exported if n not in docs and not n.startswith(("process_", "python_"))
    }
    assert not undocumented, f"exported but not in README's table: {sorted(undocumented)}"

    assert value(after, "etcd_server_has_leader") == 1
    assert value(after, "etcd_server_is_leader") == 1
    assert (
        value(after, "etcd_server_proposals_committed_total")
        >= value(before, "etcd_server_proposals_committed_total") + 21
    )  # 20 puts and the lease grant
    assert (
        value(after, "flotilla_server_requests_applied_total")
        >= value(before, "flotilla_server_requests_applied_total") + 21
    )
    assert value(after, "etcd_disk_wal_fsync_duration_seconds_count") > value(
        before, "etcd_disk_wal_fsync_duration_seconds_count"
    )
    assert value(after, "flotilla_lease_active") == 1, lease
    assert value(after, "etcd_debugging_mvcc_watcher_total") == 1
    assert value(after, "grpc_server_handled_total", grpc_method="Put", grpc_code="OK") >= 20
    assert (
        value(after, "grpc_server_handled_total", grpc_method="Put", grpc_code="INVALID_ARGUMENT")
        == 1
    )
    assert value(after, "grpc_server_started_total", grpc_method="Watch") == 1
    assert value(after, "process_resident_memory_bytes") > 1 << 20
    followers = [m for m in c.members if m is not leader]
    for f in followers:
        assert value(after, "etcd_network_peer_sent_bytes_total", To=_id(f)) > 0
        assert value(after, "etcd_network_peer_round_trip_time_seconds_count", To=_id(f)) > 0
    # A follower applied the same writes, and knows it is not the leader.
    f = scrape(followers[0])
    assert value(f, "etcd_server_is_leader") == 0
    wait_for(
        "the follower to apply the puts",
        lambda: (
            value(scrape(followers[0]), "etcd_server_proposals_applied_total")
            >= value(after, "etcd_server_proposals_committed_total")
        ),
    )


def _id(m: Proc) -> str:
    status = json.loads(etcdctl(m.endpoint, "endpoint", "status", "-w", "json").stdout)
    return f"{status[0]['Status']['header']['member_id']:x}"


def test_json_logs_carry_member_term_and_index(
    make_cluster: Callable[..., ProcessCluster], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLOTILLA_LOG_FORMAT", "json")
    c = make_cluster(3, extra_flags=["--snapshot-count=20"])
    leader = c.wait_leader()
    for i in range(30):
        etcdctl(leader.endpoint, "put", f"k{i}", "v")
    etcdctl(leader.endpoint, "member", "add", "m9", "--learner", "--peer-urls=http://127.0.0.1:9")

    def events(m: Proc) -> list[dict[str, object]]:
        lines = m.log_path.read_text().splitlines()
        docs = [json.loads(line) for line in lines]  # every line is one JSON object
        assert all(d["member"] == m.name for d in docs)
        return [d for d in docs if "event" in d]

    def seen(m: Proc, kind: str) -> list[dict[str, object]]:
        return [e for e in events(m) if e["event"] == kind]

    wait_for("membership and snapshot events", lambda: all(
        seen(m, "membership") and seen(m, "snapshot") for m in c.members
    ))  # fmt: skip
    for m in c.members:
        for e in events(m):
            assert {"term", "index", "applied", "ts", "level", "msg"} <= set(e), e
            assert isinstance(e["term"], int) and isinstance(e["index"], int)
        # One leader event per change, not one per heartbeat: a quiet cluster elects once.
        leaders = seen(m, "leader")
        assert len(leaders) == 1, leaders
        assert leaders[0]["leader"] == _id(leader) and leaders[0]["term"] >= 1
        (membership,) = seen(m, "membership")
        assert membership["learners"] and not membership["joint"]
        snap = seen(m, "snapshot")[0]
        assert isinstance(snap["snapshot_index"], int) and snap["snapshot_index"] >= 20
    roles = [e["role"] for e in seen(leader, "role")]
    assert roles[-1] == "leader" and "candidate" in roles
