"""The flotilla-node process refuses what would put data at risk, and `flotilla local up`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from .procs import ProcessCluster, etcdctl, free_port_block, wait_for

pytestmark = pytest.mark.node


def run_node(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flotilla.node.main", *args],
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_unknown_or_inconsistent_flags_exit_2_with_one_line() -> None:
    r = run_node("--no-such-flag")
    assert r.returncode == 2
    assert len(r.stderr.strip().splitlines()) == 1 and "no-such-flag" in r.stderr
    r = run_node("--name=a", "--initial-cluster=b=http://127.0.0.1:1")
    assert r.returncode == 2 and "no member named 'a'" in r.stderr


def test_a_data_dir_of_another_cluster_is_refused(tmp_path: Path) -> None:
    c = ProcessCluster(tmp_path, 1)
    c.start()
    try:
        c.wait_healthy()
        etcdctl(c.endpoints, "put", "k", "v")
    finally:
        c.stop()
    m = c.members[0]
    other = ProcessCluster(tmp_path / "other", 1, token="another-cluster")
    cmd = other.command(other.members[0])
    cmd = [a if not a.startswith("--data-dir=") else f"--data-dir={m.data_dir}" for a in cmd]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    assert r.returncode == 2
    assert "cluster" in r.stderr and str(m.data_dir) in r.stderr, r.stderr
    # Nothing was changed: the original member starts and still has its data.
    c.start()
    try:
        c.wait_healthy()
        assert etcdctl(c.endpoints, "get", "k", "--print-value-only").stdout.strip() == "v"
    finally:
        c.stop()


def test_local_up_runs_a_cluster_and_stops_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    base = free_port_block(23)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "flotilla.node.cli",
            "local",
            "up",
            "--data-dir",
            str(tmp_path),
            "--base-port",
            str(base),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
    )
    try:
        eps = ",".join(f"127.0.0.1:{base + 10 * i}" for i in range(3))
        wait_for(
            "the local cluster to take a write",
            lambda: etcdctl(eps, "put", "hello", "world", check=False).returncode == 0,
            timeout=30,
        )
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out
    assert "etcdctl" in out and "Stopped." in out
    assert all((tmp_path / f"m{i}" / "db").is_dir() for i in (1, 2, 3))
