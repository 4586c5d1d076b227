"""The ``flotilla`` operator commands against a real 3-member cluster.

Each command runs as its own process, as a person would run it; the cluster is shared by the
tests of this file (module scope) to keep the runtime modest, so each test leaves it with
three healthy voters.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from flotilla.node import backup

from .procs import Proc, ProcessCluster, etcdctl, etcdctl_json, free_ports, wait_for


def flotilla(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "flotilla.node.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"flotilla {' '.join(args)} failed: {result.stderr}")
    return result


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProcessCluster]:
    c = ProcessCluster(tmp_path_factory.mktemp("ops"), 3)
    c.start()
    try:
        c.wait_healthy()
        yield c
    finally:
        c.stop()


def status_json(c: ProcessCluster) -> list[dict[str, object]]:
    doc = json.loads(flotilla("status", "--json", f"--endpoints={c.endpoints}").stdout)
    members: list[dict[str, object]] = doc["members"]
    return members


def test_status_table_shows_every_member_and_the_leader(cluster: ProcessCluster) -> None:
    leader = cluster.wait_leader()
    etcdctl(cluster.endpoints, "put", "k", "v")
    out = flotilla("status", f"--endpoints={cluster.endpoints}").stdout
    lines = out.splitlines()
    assert lines[0].split()[:4] == ["NAME", "ID", "ENDPOINT", "ROLE"], out
    by_name = {line.split()[0]: line for line in lines[1:4]}
    assert set(by_name) == {"m1", "m2", "m3"}, out
    assert " leader " in by_name[leader.name], out
    assert sum(" follower " in line for line in by_name.values()) == 2, out
    assert all(" healthy" in line for line in by_name.values()), out
    assert lines[4].startswith(f"cluster OK: leader {leader.name}, 3/3 voters healthy"), out


def test_status_json_agrees_with_etcdctl(cluster: ProcessCluster) -> None:
    etcdctl(cluster.endpoints, "put", "k2", "v2")
    rows = status_json(cluster)
    assert [r["name"] for r in rows] == ["m1", "m2", "m3"]
    ids = {r["name"]: r["id"] for r in rows}
    listed = etcdctl_json(cluster.endpoints, "member", "list")["members"]
    assert isinstance(listed, list)
    assert ids == {m["name"]: f"{m['ID']:x}" for m in listed}
    for r in rows:
        assert r["health"] == "healthy" and r["error"] == ""
        assert isinstance(r["applied"], int) and r["applied"] > 0
        assert isinstance(r["lag"], int) and r["lag"] >= 0
        assert r["version"]


def test_status_watch_redraws_in_place_until_interrupted(cluster: ProcessCluster) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "flotilla.node.cli", "status", "--watch", "--interval=0.2",
         f"--endpoints={cluster.endpoints}"],
        stdout=subprocess.PIPE,
        text=True,
        # As from a terminal: a test run started in the background (as CI may) ignores
        # SIGINT, and children inherit that, so the Ctrl-C below would go unheard.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    assert proc.stdout is not None
    seen: list[str] = []

    def redrawn() -> bool:
        seen.append(proc.stdout.readline())  # type: ignore[union-attr]
        return sum("\x1b[H\x1b[J" in line for line in seen) >= 3

    try:
        wait_for("three redraws of the table", redrawn, timeout=30, interval=0)
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0  # Ctrl-C is the normal way out
    text = "".join(seen)
    assert text.count("cluster OK") >= 2, text


def test_status_reports_a_stopped_member(cluster: ProcessCluster) -> None:
    follower = next(m for m in cluster.members if m is not cluster.wait_leader())
    cluster.kill(follower)
    try:
        all_eps = ",".join(m.endpoint for m in cluster.members)
        result = flotilla("status", f"--endpoints={all_eps}", "--timeout=1")
        line = next(x for x in result.stdout.splitlines() if x.startswith(follower.name + " "))
        assert "unreachable" in line, result.stdout
        assert "2/3 voters healthy" in result.stdout
    finally:
        cluster.start(follower)
        cluster.wait_healthy()


def test_members_list_and_move_leader(cluster: ProcessCluster) -> None:
    out = flotilla("members", "list", f"--endpoints={cluster.endpoints}").stdout
    assert [line.split()[1] for line in out.splitlines()[1:]] == ["m1", "m2", "m3"], out
    leader = cluster.wait_leader()
    target = next(m for m in cluster.members if m is not leader)
    out = flotilla("move-leader", target.name, f"--endpoints={cluster.endpoints}").stdout
    assert f"leadership moved to {target.name}" in out
    assert cluster.wait_leader() is target
    bad = flotilla("move-leader", "nobody", f"--endpoints={cluster.endpoints}", check=False)
    assert bad.returncode == 1 and "no member named or with id 'nobody'" in bad.stderr


def test_add_promote_and_remove_a_member(cluster: ProcessCluster) -> None:
    eps = f"--endpoints={cluster.endpoints}"
    client, peer, metrics = free_ports(3)
    m4 = Proc("m4", client, peer, metrics, cluster.root / "m4", cluster.root / "m4.log")
    out = flotilla("members", "add", "m4", f"--peer-urls={m4.peer_url}", eps).stdout
    assert "added m4" in out and "as a learner" in out, out
    cluster.members.append(m4)
    try:
        log = open(m4.log_path, "ab")  # noqa: SIM115 - owned by the child
        m4.popen = subprocess.Popen(cluster.command(m4, "existing"), stdout=log, stderr=log)

        def promoted() -> bool:
            result = flotilla("members", "promote", "m4", eps, check=False)
            return result.returncode == 0

        wait_for("m4 to catch up and be promoted", promoted, timeout=30, interval=0.5)
        rows = {r["name"]: r for r in status_json(cluster)}
        assert rows["m4"]["role"] in ("follower", "leader")
        out = flotilla("members", "remove", "m4", eps).stdout
        assert "removed m4" in out
        listed = flotilla("members", eps).stdout
        assert "m4" not in listed
        wait_for("m4 to stop after its removal", lambda: not m4.alive, timeout=20)
    finally:
        if m4.alive:
            cluster.kill(m4)
        cluster.members.remove(m4)


def test_snapshot_save_writes_a_verified_backup(cluster: ProcessCluster, tmp_path: Path) -> None:
    etcdctl(cluster.endpoints, "put", "saved", "yes")
    target = tmp_path / "backup.db"
    out = flotilla("snapshot", "save", str(target), f"--endpoints={cluster.endpoints}").stdout
    assert "checksum verified" in out
    assert not (tmp_path / "backup.db.part").exists()
    state = backup.decode(target.read_bytes())
    assert b"saved" in state


def test_snapshot_save_against_nothing_fails_cleanly(tmp_path: Path) -> None:
    target = tmp_path / "b.db"
    (port,) = free_ports(1)
    result = flotilla("snapshot", "save", str(target), f"--endpoints=127.0.0.1:{port}", check=False)
    assert result.returncode == 1 and "UNAVAILABLE" in result.stderr
    assert not target.exists() and not (tmp_path / "b.db.part").exists()


def test_defrag_every_member(cluster: ProcessCluster) -> None:
    out = flotilla("defrag", f"--endpoints={cluster.endpoints}").stdout
    assert sorted(line.split()[1] for line in out.splitlines()) == ["m1", "m2", "m3"], out


def test_status_of_an_unreachable_cluster_is_an_error() -> None:
    (port,) = free_ports(1)
    result = flotilla("status", f"--endpoints=127.0.0.1:{port}", "--timeout=1", check=False)
    assert result.returncode == 1
    assert "UNAVAILABLE" in result.stderr or "DEADLINE_EXCEEDED" in result.stderr
