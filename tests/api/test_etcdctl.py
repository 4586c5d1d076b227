"""The real etcdctl against the services (skipped when etcdctl is not installed)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time

import pytest
from member import Served

ETCDCTL = shutil.which("etcdctl")
pytestmark = pytest.mark.skipif(ETCDCTL is None, reason="etcdctl is not installed")


def ctl(served: Served, *args: str, stdin: str | None = None) -> str:
    assert ETCDCTL is not None
    env = {**os.environ, "ETCDCTL_API": "3"}
    done = subprocess.run(
        [ETCDCTL, f"--endpoints={served.endpoint}", "--command-timeout=5s", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_put_get_del(served: Served) -> None:
    base = served.revision()
    assert ctl(served, "put", "foo", "bar") == "OK\n"
    assert ctl(served, "put", "foo2", "baz") == "OK\n"
    assert ctl(served, "get", "foo") == "foo\nbar\n"
    assert ctl(served, "get", "foo", "--prefix", "--keys-only") == "foo\n\nfoo2\n\n"
    assert ctl(served, "del", "foo", "--prefix") == "2\n"
    assert ctl(served, "get", "foo", f"--rev={base + 1}") == "foo\nbar\n"
    assert ctl(served, "get", "foo", "--prefix") == ""


def test_txn(served: Served) -> None:
    ctl(served, "put", "k", "v1")
    script = 'value("k") = "v1"\n\nput k v2\nget k\n\nput k nope\n\n'
    assert ctl(served, "txn", stdin=script) == "SUCCESS\n\nOK\n\nk\nv2\n"
    assert ctl(served, "txn", stdin=script) == "FAILURE\n\nOK\n"
    assert ctl(served, "get", "k", "--print-value-only") == "nope\n"


def test_lease(served: Served) -> None:
    out = ctl(served, "lease", "grant", "60")
    lease = out.split()[1]
    assert out == f"lease {lease} granted with TTL(60s)\n"
    ctl(served, "put", "lk", "v", f"--lease={lease}")
    assert "attached keys([lk])" in ctl(served, "lease", "timetolive", lease, "--keys")
    assert lease in ctl(served, "lease", "list")
    assert f"lease {lease} keepalived with TTL(60)" in ctl(
        served, "lease", "keep-alive", "--once", lease
    )
    assert ctl(served, "lease", "revoke", lease) == f"lease {lease} revoked\n"
    assert ctl(served, "get", "lk") == ""


def test_watch(served: Served) -> None:
    assert ETCDCTL is not None
    ctl(served, "put", "w0", "old")
    proc = subprocess.Popen(
        [ETCDCTL, f"--endpoints={served.endpoint}", "watch", "w", "--prefix", "--prev-kv"],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "ETCDCTL_API": "3"},
    )
    try:
        time.sleep(1.0)
        ctl(served, "put", "w0", "new")
        ctl(served, "del", "w0")
        ctl(served, "put", "w1", "x")
        assert proc.stdout is not None
        lines = [proc.stdout.readline() for _ in range(13)]
    finally:
        proc.kill()
        proc.wait()
    assert "".join(lines) == (
        "PUT\nw0\nold\nw0\nnew\n"  # prev_kv first, then the new value
        "DELETE\nw0\nnew\nw0\n\n"
        "PUT\nw1\nx\n"
    )


def test_watch_from_revision(served: Served) -> None:
    assert ETCDCTL is not None
    for v in ("a", "b"):
        ctl(served, "put", "h", v)
    proc = subprocess.Popen(
        [ETCDCTL, f"--endpoints={served.endpoint}", "watch", "h", "--rev=1"],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "ETCDCTL_API": "3"},
    )
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline() for _ in range(6)]
    finally:
        proc.kill()
        proc.wait()
    assert "".join(lines) == "PUT\nh\na\nPUT\nh\nb\n"


def test_fresh_store_is_at_revision_1(served: Served) -> None:
    """As etcd's: nothing at revision 1, the first write gets revision 2."""
    assert ctl(served, "get", "foo", "--rev=1") == ""
    assert json.loads(ctl(served, "get", "foo", "-w", "json"))["header"]["revision"] == 1
    ctl(served, "put", "foo", "bar")
    assert json.loads(ctl(served, "get", "foo", "-w", "json"))["header"]["revision"] == 2
    assert ctl(served, "get", "foo", "--rev=1") == ""


def test_compaction(served: Served) -> None:
    base = served.revision()
    for v in ("a", "b", "c"):
        ctl(served, "put", "c", v)
    mid = base + 2
    assert ctl(served, "compaction", str(mid)) == f"compacted revision {mid}\n"
    assert ctl(served, "get", "c", f"--rev={mid}", "--print-value-only") == "b\n"
