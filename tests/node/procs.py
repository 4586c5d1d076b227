"""Real flotilla-node processes on loopback for the node's end-to-end tests.

Every member is a separate OS process started with etcd-style flags, with its own LevelDB
directory; tests talk to it with the real ``etcdctl`` and a Python etcd client, and kill it
with real signals.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import pytest

T = TypeVar("T")


def free_ports(n: int) -> list[int]:
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def free_port_block(n: int, start: int = 21000, stop: int = 32000) -> int:
    """A base port such that base .. base+n-1 are all free (below the ephemeral range)."""
    for base in range(start + (os.getpid() % 50) * 100, stop, 100):
        socks = []
        try:
            for port in range(base, base + n):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise AssertionError(f"no block of {n} free ports between {start} and {stop}")


FAILED = pytest.StashKey[bool]()
"""Whether a test's body failed (set by the hook in ``tests/conftest.py``), so that its
fixtures show the members' logs."""


def wait_for(
    what: str, check: Callable[[], T | None], timeout: float = 20.0, interval: float = 0.05
) -> T:
    """Poll ``check`` until it returns something truthy; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except Exception as exc:  # reported if the wait fails
            last_error = exc
        time.sleep(interval)
    detail = f" (last error: {last_error})" if last_error else ""
    raise AssertionError(f"timed out after {timeout}s waiting for {what}{detail}")


@dataclass
class Proc:
    name: str
    client_port: int
    peer_port: int
    metrics_port: int
    data_dir: Path
    log_path: Path
    host: str = "127.0.0.1"
    netns: str | None = None
    scheme: str = "http"
    """``https`` for a member started with TLS flags on its client and peer URLs."""
    flags: list[str] = field(default_factory=list)
    """Flags for this member only (after the cluster's)."""
    popen: subprocess.Popen[bytes] | None = None
    env: dict[str, str] = field(default_factory=dict)
    """Extra environment for the next start (e.g. FLOTILLA_FAILPOINTS)."""
    initial_state: str = "new"
    """``existing`` for a member added to a running cluster."""

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.peer_port}"

    @property
    def client_url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.client_port}"

    def http(self, path: str) -> tuple[int, str]:
        try:
            url = f"http://{self.host}:{self.metrics_port}{path}"
            with urllib.request.urlopen(url, timeout=1) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as err:
            return err.code, err.read().decode()

    def metric(self, name: str) -> float:
        _, text = self.http("/metrics")
        for line in text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        raise KeyError(name)

    @property
    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None


@dataclass
class ProcessCluster:
    root: Path
    size: int
    token: str = "flotilla-test"
    extra_flags: list[str] = field(default_factory=list)
    scheme: str = "http"
    members: list[Proc] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        ports = free_ports(3 * self.size)
        for i in range(self.size):
            name = f"m{i + 1}"
            self.members.append(
                Proc(
                    name,
                    ports[3 * i],
                    ports[3 * i + 1],
                    ports[3 * i + 2],
                    self.root / name,
                    self.root / f"{name}.log",
                    scheme=self.scheme,
                )
            )

    @property
    def initial_cluster(self) -> str:
        return ",".join(f"{m.name}={m.peer_url}" for m in self.members)

    def command(self, m: Proc, state: str = "new") -> list[str]:
        prefix = ["ip", "netns", "exec", m.netns] if m.netns else []
        return [
            *prefix,
            sys.executable,
            "-m",
            "flotilla.node.main",
            f"--name={m.name}",
            f"--data-dir={m.data_dir}",
            f"--listen-client-urls={m.client_url}",
            f"--advertise-client-urls={m.client_url}",
            f"--listen-peer-urls={m.peer_url}",
            f"--initial-advertise-peer-urls={m.peer_url}",
            f"--listen-metrics-urls=http://{m.host}:{m.metrics_port}",
            f"--initial-cluster={self.initial_cluster}",
            f"--initial-cluster-token={self.token}",
            f"--initial-cluster-state={state}",
            "--heartbeat-interval=50",
            "--election-timeout=500",
            *self.extra_flags,
            *m.flags,
        ]

    def start(self, m: Proc | None = None) -> None:
        for p in [m] if m else self.members:
            log = open(p.log_path, "ab")  # noqa: SIM115 - owned by the child
            env = dict(os.environ, PYTHONUNBUFFERED="1", **p.env)
            p.popen = subprocess.Popen(
                self.command(p, p.initial_state), stdout=log, stderr=subprocess.STDOUT, env=env
            )

    def kill(self, m: Proc, sig: int = signal.SIGKILL) -> None:
        assert m.popen is not None
        m.popen.send_signal(sig)
        m.popen.wait(timeout=15)

    def stop(self) -> None:
        for m in self.members:
            if m.alive:
                assert m.popen is not None
                m.popen.send_signal(signal.SIGTERM)
        for m in self.members:
            if m.popen is not None:
                try:
                    m.popen.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    m.popen.kill()
                    m.popen.wait()

    def logs(self) -> str:
        parts = []
        for m in self.members:
            if m.log_path.exists():
                tail = m.log_path.read_text(errors="replace").splitlines()[-30:]
                parts.append(f"--- {m.name} ---\n" + "\n".join(tail))
        return "\n".join(parts)

    def leader(self, among: list[Proc] | None = None) -> Proc | None:
        for m in among or self.members:
            if m.alive:
                try:
                    if m.metric("etcd_server_is_leader") == 1.0:
                        return m
                except (OSError, KeyError):
                    continue
        return None

    def wait_leader(self, among: list[Proc] | None = None, timeout: float = 20) -> Proc:
        return wait_for("a leader", lambda: self.leader(among), timeout)

    def wait_healthy(self, timeout: float = 30) -> Proc:
        def all_healthy() -> bool:
            return all(m.http("/health")[0] == 200 for m in self.members if m.alive)

        wait_for("every member to be healthy", all_healthy, timeout)
        return self.wait_leader()

    @property
    def endpoints(self) -> str:
        return ",".join(m.endpoint for m in self.members if m.alive)


def etcdctl(
    endpoints: str, *args: str, check: bool = True, timeout: float = 10, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, ETCDCTL_API="3")
    cmd = ["etcdctl", f"--endpoints={endpoints}", "--command-timeout=5s", *args]
    result = subprocess.run(
        cmd, env=env, capture_output=True, text=True, timeout=timeout, input=stdin
    )
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed: {result.stderr.strip()}")
    return result


def etcdctl_json(endpoints: str, *args: str) -> dict[str, object]:
    out = etcdctl(endpoints, *args, "-w", "json").stdout
    doc: dict[str, object] = json.loads(out)
    return doc
