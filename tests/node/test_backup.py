"""etcdctl snapshot save from a running cluster; flotilla snapshot restore into a new one."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from .procs import ProcessCluster, etcdctl

pytestmark = pytest.mark.node


def test_a_restored_cluster_serves_the_same_data(tmp_path: Path) -> None:
    old = ProcessCluster(tmp_path / "old", 3)
    old.start()
    try:
        old.wait_healthy()
        for i in range(50):
            etcdctl(old.endpoints, "put", f"k{i:02d}", f"v{i}")
        etcdctl(old.endpoints, "del", "k07")
        backup = tmp_path / "backup.db"
        out = etcdctl(old.members[0].endpoint, "snapshot", "save", str(backup))
        assert "Snapshot saved" in out.stdout + out.stderr
        before = etcdctl(old.endpoints, "get", "k", "--prefix", "-w", "json").stdout
    finally:
        old.stop()

    new = ProcessCluster(tmp_path / "new", 3, token="restored-cluster")
    for m in new.members:
        flags = [a for a in new.command(m) if a.startswith("--")]
        r = subprocess.run(
            [sys.executable, "-m", "flotilla.node.cli", "snapshot", "restore", str(backup), *flags],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert r.returncode == 0, r.stderr
    new.start()
    try:
        new.wait_healthy()
        got = etcdctl(new.endpoints, "get", "k", "--prefix", "--print-value-only").stdout.split()
        assert got == [f"v{i}" for i in range(50) if i != 7]
        assert '"mod_revision"' in before
        status = etcdctl(new.endpoints, "member", "list").stdout
        assert status.count("started") == 3
        etcdctl(new.endpoints, "put", "after-restore", "ok")
    except BaseException:
        print(new.logs())
        raise
    finally:
        new.stop()


def test_a_damaged_backup_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"\0" * 544)
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "flotilla.node.cli",
            "snapshot",
            "restore",
            str(bad),
            "--name=a",
            f"--data-dir={tmp_path / 'a'}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2 and "checksum" in r.stderr, r.stderr
    assert not (tmp_path / "a").exists()
