"""Running one scenario against both clusters and comparing what ``etcdctl`` shows.

A scenario is a function of a ``Target`` that runs commands and returns their normalized
output. ``same`` runs it against etcd first (a failure there is a broken test, reported as
an ordinary failure), then against Flotilla, and raises ``Mismatch`` when Flotilla fails or
answers differently. Known differences are marked ``xfail(raises=Mismatch)``, so a broken
test never hides behind them.

Normalization removes what legitimately differs between two clusters: member and cluster
ids, raft terms, lease ids, endpoints and ports, timings, and absolute revisions (each
scenario measures revisions from the cluster's revision when it started).
"""

from __future__ import annotations

import base64
import os
import pprint
import queue
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import pytest

from .clusters import Target

T = TypeVar("T")

REVISION_FIELDS = {
    "revision",
    "create_revision",
    "mod_revision",
    "compact_revision",
    "Revision",
    "CreateRevision",
    "ModRevision",
    "CompactRevision",
}
DROPPED_FIELDS = {"cluster_id", "member_id", "raft_term", "ClusterID", "MemberID", "RaftTerm"}


class Mismatch(AssertionError):
    """Flotilla failed, or answered differently from etcd."""


def flotilla_differs(reason: str) -> pytest.MarkDecorator:
    """Mark a known difference: an expected failure only when Flotilla is the one that differs."""
    return pytest.mark.xfail(raises=Mismatch, strict=False, reason=reason)


def same(targets: dict[str, Target], scenario: Callable[[Target], T]) -> T:
    """Run ``scenario`` on etcd, then on Flotilla; return etcd's result if both agree."""
    expected = scenario(targets["etcd"])
    try:
        got = scenario(targets["flotilla"])
    except Exception as exc:
        raise Mismatch(f"flotilla failed where etcd succeeded: {exc}") from exc
    if got != expected:
        raise Mismatch(
            "flotilla differs from etcd\n--- etcd\n"
            + pprint.pformat(expected, width=100)
            + "\n--- flotilla\n"
            + pprint.pformat(got, width=100)
        )
    return expected


class Norm:
    """Normalizes one scenario's output on one target.

    Revisions become relative to ``base`` (the revision before the scenario's first write);
    ids (leases, members) become ``<id1>``, ``<id2>``… in order of first appearance, the same
    id getting the same name wherever it shows up, decimal or hex.
    """

    def __init__(self, target: Target) -> None:
        self.target = target
        self.base = target.revision()
        self.ids: dict[int, str] = {}

    def rev(self, value: int) -> int:
        return value - self.base if value > 0 else value

    def id(self, value: int) -> str:
        return self.ids.setdefault(value, f"<id{len(self.ids) + 1}>")

    def hex_id(self, text: str) -> str:
        return self.id(int(text, 16))

    def doc(self, value: Any, key: str = "") -> Any:
        """A JSON document from ``-w json``: ids named, revisions relative, bytes decoded."""
        if isinstance(value, dict):
            return {
                k: self.doc(v, k)
                for k, v in value.items()
                if k not in DROPPED_FIELDS and not (k == "header" and not v)
            }
        if isinstance(value, list):
            return [self.doc(v, key) for v in value]
        if key in REVISION_FIELDS and isinstance(value, int):
            return self.rev(value)
        if key in {"ID", "id", "lease", "Lease", "leader", "leaseID"} and isinstance(value, int):
            return self.id(value) if value else 0
        if key in {"key", "value", "range_end"} and isinstance(value, str):
            return base64.b64decode(value).decode(errors="replace")
        if key == "keys" and isinstance(value, str):
            return base64.b64decode(value).decode(errors="replace")
        return value

    def text(self, out: str, ids: list[int] | None = None) -> str:
        """Plain output: known ids (hex, 16 digits or fewer) and endpoints replaced."""
        for i in ids or []:
            # etcdctl prints ids with %16x: shorter ones come with leading spaces.
            out = re.sub(rf" *\b0*{i:x}\b", " " + self.id(i), out)
        for n, ep in enumerate(self.target.member_endpoints):
            out = out.replace(ep, f"<ep{n + 1}>")
        return out


def run(
    target: Target, *args: str, stdin: str | None = None, endpoints: str | None = None
) -> tuple[int, str, str]:
    """Exit code, stdout and the error text (without the client's retry log lines)."""
    res = target.ctl(*args, check=False, stdin=stdin, endpoints=endpoints)
    return res.returncode, res.stdout, client_errors(res.stderr)


def client_errors(stderr: str) -> str:
    lines = [ln for ln in stderr.splitlines() if not ln.startswith('{"level"')]
    return "\n".join(lines).strip()


class Background:
    """An ``etcdctl`` that keeps running (watch, lock, elect), read line by line.

    A thread moves stdout lines into a queue so the test can wait for each line with a
    bounded timeout; ``stop`` interrupts it the way a user would (SIGINT), so it releases
    what it holds (a lock, a campaign's lease).
    """

    def __init__(self, target: Target, *args: str) -> None:
        cmd = ["etcdctl", f"--endpoints={target.endpoints}", *args]
        self.args = args
        self.proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=dict(os.environ, ETCDCTL_API="3"),
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def read(self, n: int, timeout: float = 10) -> list[str]:
        """The next ``n`` lines, failing clearly if they do not come within ``timeout``."""
        deadline = time.monotonic() + timeout
        got: list[str] = []
        while len(got) < n:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(
                    f"etcdctl {' '.join(self.args)}: expected {n} lines within {timeout}s, "
                    f"got {got}"
                ) from None
            if line is None:
                raise AssertionError(
                    f"etcdctl {' '.join(self.args)} exited early after {got}: {self.stderr()}"
                )
            got.append(line)
        return got

    def quiet_for(self, seconds: float) -> bool:
        """True if nothing is printed (and the process keeps running) for ``seconds``."""
        try:
            line = self.lines.get(timeout=seconds)
        except queue.Empty:
            return True
        self.lines.put(line)
        return False

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def wait(self, timeout: float = 10) -> int:
        return self.proc.wait(timeout=timeout)

    def stderr(self) -> str:
        if self.proc.poll() is None or self.proc.stderr is None:
            return ""
        return client_errors(self.proc.stderr.read())
