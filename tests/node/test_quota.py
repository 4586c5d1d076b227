"""The space quota: past --quota-backend-bytes writes get NOSPACE, nothing is lost."""

from __future__ import annotations

from pathlib import Path

import pytest

from .procs import ProcessCluster, etcdctl, etcdctl_json, wait_for

pytestmark = pytest.mark.node

QUOTA = 400_000


def test_writes_past_the_quota_are_refused_reads_and_deletes_go_on(tmp_path: Path) -> None:
    # Snapshots every few entries, so each member holds one when it is defragmented (and
    # moves it to its current state first, which must neither block nor lose anything).
    flags = [f"--quota-backend-bytes={QUOTA}", "--snapshot-count=5"]
    c = ProcessCluster(tmp_path, 3, extra_flags=flags)
    c.start()
    try:
        c.wait_healthy()
        eps = c.endpoints
        value = "x" * 20_000
        written = 0

        def refused() -> bool:
            nonlocal written
            r = etcdctl(eps, "put", f"big{written}", value, check=False)
            if r.returncode == 0:
                written += 1
                return False
            assert "database space exceeded" in r.stderr, r.stderr
            return True

        wait_for("a write to be refused for space", refused, timeout=60, interval=0.01)
        assert written > 5
        # The member that refused raised the alarm for the whole cluster, through the log.
        wait_for(
            "the NOSPACE alarm to be listed",
            lambda: "NOSPACE" in etcdctl(eps, "alarm", "list").stdout,
            timeout=10,
        )
        status = etcdctl_json(eps, "endpoint", "status")
        assert "NOSPACE" in str(status)
        # Nothing acknowledged is lost; reads and deletes still work.
        got = etcdctl(eps, "get", "big", "--prefix", "--keys-only").stdout.split()
        assert got == sorted(f"big{i}" for i in range(written))
        etcdctl(eps, "del", "big", "--prefix")
        again = etcdctl(eps, "put", "small", "1", check=False)
        assert again.returncode != 0 and "database space exceeded" in again.stderr
        # Compact, defragment, disarm: writes work again.
        rev = int(etcdctl_json(eps, "get", "small")["header"]["revision"])  # type: ignore[index]
        etcdctl(eps, "compaction", str(rev), "--physical")
        for m in c.members:
            etcdctl(m.endpoint, "defrag")
        wait_for(
            "the databases to shrink below the quota",
            lambda: all(
                sum(f.stat().st_size for f in (m.data_dir / "db").iterdir()) < QUOTA * 0.8
                for m in c.members
            ),
            timeout=20,
        )

        def disarmed() -> bool:
            # A member that refused a write just before may raise its alarm a moment after
            # another was disarmed: disarm until none is left.
            etcdctl(eps, "alarm", "disarm")
            return "NOSPACE" not in etcdctl(eps, "alarm", "list").stdout

        wait_for("the alarms to be disarmed", disarmed, timeout=10)
        etcdctl(eps, "put", "small", "1")
    except BaseException:
        print(c.logs())
        raise
    finally:
        c.stop()
