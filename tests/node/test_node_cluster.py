"""flotilla-node end to end: real processes, real LevelDB files, real signals, real clients.

Clients are the real ``etcdctl`` (Debian's etcd-client) and aetcd, a Python etcd client from
PyPI; neither knows it is not talking to etcd.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from .procs import ProcessCluster, etcdctl, etcdctl_json, wait_for

pytestmark = pytest.mark.node


def run_client(scenario: str, **args: object) -> Any:
    """Run an aetcd scenario from ``etcd_client`` in a child process; return its result."""
    out = subprocess.run(
        [sys.executable, "-m", "tests.node.etcd_client", scenario, json.dumps(args)],
        capture_output=True,
        text=True,
        timeout=90,
        cwd=Path(__file__).parents[2],
    )
    assert out.returncode == 0, f"client scenario {scenario} failed: {out.stderr[-2000:]}"
    return json.loads(out.stdout)


class Writer:
    """Writes distinct keys through any member, recording exactly what was acknowledged."""

    def __init__(self, cluster: ProcessCluster) -> None:
        self.cluster = cluster
        self.acked: dict[str, str] = {}
        self.seq = 0

    def write(self, n: int) -> None:
        eps = [m.endpoint for m in self.cluster.members if m.alive]
        self.acked.update(run_client("write", endpoints=eps, first=self.seq + 1, count=n))
        self.seq += n

    def check_all_present(self) -> None:
        out = etcdctl(self.cluster.endpoints, "get", "w/", "--prefix").stdout.split("\n")
        stored = dict(zip(out[0::2], out[1::2], strict=False))
        missing = [k for k, v in self.acked.items() if stored.get(k) != v]
        assert not missing, f"{len(missing)} acknowledged writes lost, e.g. {missing[:3]}"


def test_three_members_form_and_serve_etcdctl(cluster3: ProcessCluster) -> None:
    eps = cluster3.endpoints
    etcdctl(eps, "put", "greeting", "hello")
    assert etcdctl(eps, "get", "greeting").stdout.split() == ["greeting", "hello"]
    # Every member answers, linearizable and serializable.
    for m in cluster3.members:
        out = etcdctl(m.endpoint, "get", "greeting", "--print-value-only").stdout.strip()
        assert out == "hello"
        out = etcdctl(m.endpoint, "get", "greeting", "--consistency=s", "--print-value-only").stdout
        assert out.strip() in ("hello", "")
    status = etcdctl_json(eps, "endpoint", "status")
    assert status


def test_kill_dash_nine_loses_no_acknowledged_write(cluster3: ProcessCluster) -> None:
    writer = Writer(cluster3)
    writer.write(30)
    # A follower.
    leader = cluster3.wait_leader()
    follower = next(m for m in cluster3.members if m is not leader)
    cluster3.kill(follower)
    writer.write(20)
    cluster3.start(follower)
    # The leader.
    cluster3.kill(leader)
    writer.write(30)
    cluster3.start(leader)
    # All members at once.
    for m in cluster3.members:
        if m.alive:
            cluster3.kill(m)
    cluster3.start()
    cluster3.wait_healthy()
    writer.write(10)
    writer.check_all_present()
    # Availability under load is not what this test is about; losing nothing is. Still, the
    # writer must have had most of its writes acknowledged for the check to mean something.
    assert len(writer.acked) >= 40


def test_new_leader_within_three_election_timeouts(cluster3: ProcessCluster) -> None:
    leader = cluster3.wait_leader()
    others = [m for m in cluster3.members if m is not leader]
    cluster3.kill(leader)
    started = time.time()
    elapsed = run_client(
        "first_write", endpoints=[m.endpoint for m in others], started=started, limit=10
    )
    assert elapsed >= 0, "no write succeeded within 10s of killing the leader"
    print(f"failover: {elapsed:.3f}s")
    assert elapsed < 3 * 0.5, f"failover took {elapsed:.2f}s, more than 3 election timeouts"


def test_idle_followers_apply_a_write_to_the_leader_long_before_the_next_heartbeat(
    make_cluster: Callable[..., ProcessCluster],
) -> None:
    """A follower that waits for nothing learns a commit index from the next append, or from
    the leader's announcement 2 ms later when none goes out: not from the next heartbeat. With
    heartbeats a second apart and nothing else to carry it, each write is applied everywhere
    within 0.3 s (a heartbeat would land that soon after a write 3 times in 10)."""
    c = make_cluster(3, extra_flags=["--heartbeat-interval=1000", "--election-timeout=5000"])
    leader = c.wait_leader(timeout=30)
    followers = [m for m in c.members if m is not leader]
    applied = "etcd_server_proposals_applied_total"
    for i in range(5):
        etcdctl(leader.endpoint, "put", f"idle/{i}", "v")
        index = leader.metric(applied)
        wait_for(
            f"both followers to apply index {index:.0f} (write {i})",
            lambda index=index: all(f.metric(applied) >= index for f in followers),
            timeout=0.3,
            interval=0.01,
        )


def test_graceful_stop_hands_over_leadership(cluster3: ProcessCluster) -> None:
    leader = cluster3.wait_leader()
    term_before = leader.metric("flotilla_server_term")
    cluster3.kill(leader, signal.SIGTERM)
    assert leader.popen is not None and leader.popen.returncode == 0
    new = cluster3.wait_leader([m for m in cluster3.members if m is not leader], timeout=5)
    assert new.metric("flotilla_server_term") == term_before + 1


def test_watch_resumes_from_its_last_revision_without_gaps_or_duplicates(
    cluster3: ProcessCluster,
) -> None:
    seen = run_client("watch_resume", endpoints=[m.endpoint for m in cluster3.members])
    assert seen == sorted(set(seen)), f"duplicates or disorder: {seen}"
    assert seen == list(range(seen[0], seen[0] + 10)), f"gaps: {seen}"


def test_lease_expiry_deletes_keys_in_one_revision(cluster3: ProcessCluster) -> None:
    eps = cluster3.endpoints
    out = etcdctl(eps, "lease", "grant", "2").stdout
    lease_id = out.split()[1]
    etcdctl(eps, "put", "svc/a", "1", f"--lease={lease_id}")
    etcdctl(eps, "put", "svc/b", "2", f"--lease={lease_id}")
    rev_before = int(etcdctl_json(eps, "get", "svc/a")["header"]["revision"])  # type: ignore[index]
    granted = time.monotonic()

    def gone() -> bool:
        return etcdctl(eps, "get", "svc/", "--prefix", "--keys-only").stdout.strip() == ""

    wait_for("the lease's keys to disappear", gone, timeout=2 + 0.5 + 3)
    assert time.monotonic() - granted <= 2 + 0.5 + 1.5
    rev_after = int(etcdctl_json(eps, "get", "svc/a")["header"]["revision"])  # type: ignore[index]
    assert rev_after == rev_before + 1, "both keys should go in one revision"


def test_keep_alives_through_a_follower_renew_on_the_leader(cluster3: ProcessCluster) -> None:
    """A follower forwards keep-alives to the leader, many leases per call: each client still
    gets its own lease's TTL, and a revoked lease answers TTL 0 as etcd does."""
    leader = cluster3.wait_leader()
    follower = next(m for m in cluster3.members if m is not leader)
    got = run_client(
        "keep_alive_many", grant_at=leader.endpoint, renew_at=follower.endpoint, leases=50
    )
    assert got["replied"] == got["ids"]
    assert all(25 <= ttl <= 30 for ttl in got["ttls"][:-1]), got["ttls"]
    assert got["ttls"][-1] == 0, "a revoked lease kept alive must answer TTL 0"
    left = etcdctl_json(leader.endpoint, "lease", "timetolive", f"{got['ids'][0]:x}")
    assert 25 <= int(left["ttl"]) <= 30  # type: ignore[index]


def test_time_to_live_on_a_follower_is_the_leaders_clock(cluster3: ProcessCluster) -> None:
    """Only the leader runs lease clocks; a follower asks it, as etcd forwards the call, so a
    registration checked through any member shows the time it really has left."""
    leader = cluster3.wait_leader()
    follower = next(m for m in cluster3.members if m is not leader)
    lease = etcdctl(leader.endpoint, "lease", "grant", "30").stdout.split()[1]
    etcdctl(leader.endpoint, "put", "svc/ttl", "up", f"--lease={lease}")

    def ttl(endpoint: str) -> int:
        return int(etcdctl_json(endpoint, "lease", "timetolive", lease)["ttl"])  # type: ignore[arg-type]

    wait_for("the lease to run for 2 s on the leader", lambda: ttl(leader.endpoint) <= 28, 10)
    on_leader = ttl(leader.endpoint)
    on_follower = ttl(follower.endpoint)
    assert on_follower <= on_leader, f"follower says {on_follower} s, leader {on_leader} s"
    assert on_follower >= on_leader - 2
    keys = etcdctl(follower.endpoint, "lease", "timetolive", lease, "--keys").stdout
    assert "granted with TTL(30s)" in keys and "attached keys([svc/ttl])" in keys, keys
    etcdctl(leader.endpoint, "lease", "revoke", lease)
    gone = etcdctl(follower.endpoint, "lease", "timetolive", lease).stdout
    assert "already expired" in gone, gone


def test_bad_requests_get_etcds_errors_and_change_nothing(cluster3: ProcessCluster) -> None:
    eps = cluster3.endpoints
    etcdctl(eps, "put", "k", "v")
    rev = int(etcdctl_json(eps, "get", "k")["header"]["revision"])  # type: ignore[index]
    r = etcdctl(eps, "put", "big", check=False, stdin="x" * (1600 * 1024))
    assert "request is too large" in r.stderr
    r = etcdctl(eps, "put", "", "v", check=False)
    assert r.returncode != 0
    r = etcdctl(eps, "put", "k2", "v", "--lease=1234abcd", check=False)
    assert "requested lease not found" in r.stderr
    r = etcdctl(eps, "get", "k", f"--rev={rev + 100}", check=False)
    assert "required revision is a future revision" in r.stderr
    assert int(etcdctl_json(eps, "get", "k")["header"]["revision"]) == rev  # type: ignore[index]


INSTALLED = "etcd_snap_db_save_total_duration_seconds_count"
"""Snapshots a member installed from its leader."""


def test_a_member_restarted_after_compaction_catches_up_by_snapshot(tmp_path: Path) -> None:
    c = ProcessCluster(tmp_path, 3, extra_flags=["--snapshot-count=50"])
    c.start()
    try:
        c.wait_healthy()
        lagging = c.members[2]
        c.kill(lagging)
        # A write forwarded to a leader that just died waits out its timeout, as in etcd:
        # let the others settle on a leader first.
        c.wait_leader([m for m in c.members if m is not lagging])
        for i in range(300):
            etcdctl(c.endpoints, "put", f"k{i}", f"v{i}")
        c.start(lagging)

        def caught_up() -> bool:
            out = etcdctl(lagging.endpoint, "get", "k299", "--consistency=s").stdout
            return "v299" in out

        wait_for("the restarted member to catch up", caught_up, timeout=30)
        assert lagging.metric(INSTALLED) >= 1, "the lagging member should have installed one"
        # In the same write as the log's record of it: nothing is kept on the side.
        assert not list((lagging.data_dir / "snap").glob("*.snap"))
    except BaseException:
        print(c.logs())
        raise
    finally:
        c.stop()


def test_a_restarted_cluster_serves_a_snapshot_of_the_state_it_holds(tmp_path: Path) -> None:
    """A member's own snapshot is a record, not a file: after a restart the state machine is
    past that record, and a member behind the log must still get a snapshot that matches its
    index (the record moves to the state held at start-up)."""
    c = ProcessCluster(tmp_path, 3, extra_flags=["--snapshot-count=50"])
    c.start()
    try:
        c.wait_healthy()
        lagging = c.members[2]
        others = c.members[:2]
        c.kill(lagging)
        c.wait_leader(others)
        for i in range(130):
            etcdctl(c.endpoints, "put", f"k{i}", f"v{i}")
        for m in others:
            assert not list((m.data_dir / "snap").glob("*.snap")), f"{m.name} wrote a file"
            c.kill(m)
        for m in others:
            c.start(m)
        c.wait_leader(others)
        c.start(lagging)

        def caught_up() -> bool:
            out = etcdctl(lagging.endpoint, "get", "k", "--prefix", "--consistency=s").stdout
            return out.count("\n") == 2 * 130

        wait_for("the lagging member to catch up", caught_up, timeout=30)
        assert lagging.metric(INSTALLED) >= 1, "it caught up without a snapshot"
        etcdctl(c.endpoints, "put", "after", "restart")
        wait_for(
            "the lagging member to follow on",
            lambda: "restart" in etcdctl(lagging.endpoint, "get", "after").stdout,
            timeout=10,
        )
    except BaseException:
        print(c.logs())
        raise
    finally:
        c.stop()


def test_auto_compaction_keeps_its_retention_and_outlives_its_leader(tmp_path: Path) -> None:
    """etcd's --auto-compaction-retention: history older than the retention goes without a
    client asking; every member samples revisions, so a new leader carries on at once."""
    c = ProcessCluster(tmp_path, 3, extra_flags=["--auto-compaction-retention=3s"])
    c.start()
    try:
        c.wait_healthy()

        def put() -> int:
            doc = etcdctl_json(c.endpoints, "put", "k", "v")
            return int(doc["header"]["revision"])  # type: ignore[index]

        def compacted(rev: int) -> bool:
            r = etcdctl(c.endpoints, "get", "k", f"--rev={rev}", check=False)
            return "required revision has been compacted" in r.stderr

        old = put()
        put()  # the history must move on for `old` to fall out of it
        assert not compacted(old), "compacted before the retention passed"
        wait_for("the history older than 3 s to be compacted", lambda: compacted(old), 15)
        leader = c.wait_leader()
        c.kill(leader)
        c.wait_leader([m for m in c.members if m is not leader])
        old = put()
        put()
        wait_for("the new leader to compact too", lambda: compacted(old), 15)
        assert "auto-compaction at revision" in c.logs()
    except BaseException:
        print(c.logs())
        raise
    finally:
        c.stop()


def test_five_members_form(tmp_path: Path) -> None:
    c = ProcessCluster(tmp_path, 5)
    c.start()
    try:
        c.wait_healthy(timeout=40)
        etcdctl(c.endpoints, "put", "five", "ok")
        for m in c.members:
            assert etcdctl(m.endpoint, "get", "five", "--print-value-only").stdout.strip() == "ok"
    except BaseException:
        print(c.logs())
        raise
    finally:
        c.stop()


def test_metrics_and_probes(cluster3: ProcessCluster) -> None:
    etcdctl(cluster3.endpoints, "put", "m", "1")
    leader = cluster3.wait_leader()
    code, text = leader.http("/metrics")
    assert code == 200
    for name in (
        "etcd_server_has_leader 1.0",
        "etcd_server_is_leader 1.0",
        "flotilla_server_term ",
        "etcd_server_proposals_committed_total ",
        "etcd_server_proposals_applied_total ",
        "flotilla_server_requests_applied_total ",
        "etcd_disk_wal_fsync_duration_seconds_bucket",
        "etcd_server_apply_duration_seconds_bucket",
    ):
        assert name in text, f"{name!r} missing from /metrics"
    # Round trips appear once the leader has had heartbeats answered.
    wait_for(
        "heartbeat round trips in the leader's /metrics",
        lambda: "etcd_network_peer_round_trip_time_seconds_bucket" in leader.http("/metrics")[1],
        timeout=5,
    )
    for m in cluster3.members:
        assert m.http("/health")[0] == 200
        wait_for(f"{m.name} to be ready", lambda m=m: m.http("/readyz")[0] == 200)
    # Liveness does not depend on the cluster: a member left alone after its peers died has
    # no leader (health and readiness fail), yet it is alive, and restarting it cures nothing.
    survivor, *gone = cluster3.members
    for m in gone:
        cluster3.kill(m)
    wait_for("the survivor to lose its leader", lambda: survivor.http("/health")[0] == 503)
    assert survivor.http("/readyz")[0] == 503
    assert survivor.http("/livez") == (200, "ok\n")
