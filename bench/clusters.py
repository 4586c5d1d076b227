"""Three-member clusters of Flotilla or etcd on loopback, started with the same flags.

Both kinds take etcd's command line, so one description of a member serves both; only the
program and the name of the leader metric differ. Data directories live under one root, so
both write to the same disk, and both fsync (neither is given an unsafe flag).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

HEARTBEAT_MS = 100
ELECTION_MS = 1000
SNAPSHOT_COUNT = 10_000


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


@dataclass
class Member:
    name: str
    client_port: int
    peer_port: int
    metrics_port: int
    data_dir: Path
    popen: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://127.0.0.1:{self.peer_port}"

    @property
    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def http(self, path: str) -> tuple[int, str]:
        try:
            url = f"http://127.0.0.1:{self.metrics_port}{path}"
            with urllib.request.urlopen(url, timeout=1) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as err:
            return err.code, err.read().decode()

    def metric(self, name: str) -> float | None:
        _, text = self.http("/metrics")
        for line in text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        return None

    def cpu_seconds(self) -> float:
        """User plus system CPU time the member process has used, from /proc."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rss_bytes(self) -> int:
        """Resident memory of the member process, from /proc."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0


def dir_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


@dataclass
class Cluster:
    """A cluster of ``size`` members of one system; subclasses give the program."""

    label: str
    root: Path
    size: int = 3
    members: list[Member] = field(default_factory=list)
    learners: list[Member] = field(default_factory=list)
    leader_metric: str = ""

    def __post_init__(self) -> None:
        if self.root.exists():
            shutil.rmtree(self.root)
        self.root.mkdir(parents=True)
        ports = free_ports(3 * self.size)
        for i in range(self.size):
            name = f"m{i + 1}"
            self.members.append(
                Member(name, ports[3 * i], ports[3 * i + 1], ports[3 * i + 2], self.root / name)
            )

    def program(self) -> list[str]:
        raise NotImplementedError

    @property
    def endpoints(self) -> str:
        return ",".join(m.endpoint for m in self.members if m.alive)

    def initial_cluster(self, members: list[Member]) -> str:
        return ",".join(f"{m.name}={m.peer_url}" for m in members)

    def command(self, m: Member, members: list[Member], state: str = "new") -> list[str]:
        return [
            *self.program(),
            f"--name={m.name}",
            f"--data-dir={m.data_dir}",
            f"--listen-client-urls=http://127.0.0.1:{m.client_port}",
            f"--advertise-client-urls=http://127.0.0.1:{m.client_port}",
            f"--listen-peer-urls={m.peer_url}",
            f"--initial-advertise-peer-urls={m.peer_url}",
            f"--listen-metrics-urls=http://127.0.0.1:{m.metrics_port}",
            f"--initial-cluster={self.initial_cluster(members)}",
            "--initial-cluster-token=bench",
            f"--initial-cluster-state={state}",
            f"--heartbeat-interval={HEARTBEAT_MS}",
            f"--election-timeout={ELECTION_MS}",
            f"--snapshot-count={SNAPSHOT_COUNT}",
        ]

    def spawn(self, m: Member, members: list[Member], state: str = "new") -> None:
        log = open(self.root / f"{m.name}.log", "ab")  # noqa: SIM115 - owned by the child
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        m.popen = subprocess.Popen(
            self.command(m, members, state), stdout=log, stderr=subprocess.STDOUT, env=env
        )

    def start(self, timeout: float = 60) -> None:
        for m in self.members:
            self.spawn(m, self.members)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.leader() and all(m.http("/health")[0] == 200 for m in self.members):
                return
            for m in self.members:
                if not m.alive:
                    raise RuntimeError(f"{self.label} {m.name} exited; see {self.root}")
            time.sleep(0.1)
        raise RuntimeError(f"{self.label}: no healthy cluster after {timeout}s")

    def leader(self) -> Member | None:
        for m in self.members:
            if m.alive:
                try:
                    if m.metric(self.leader_metric) == 1.0:
                        return m
                except OSError:
                    continue
        return None

    def wait_leader(self, timeout: float = 30) -> Member:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            leader = self.leader()
            if leader:
                return leader
            time.sleep(0.05)
        raise RuntimeError(f"{self.label}: no leader after {timeout}s")

    def kill(self, m: Member) -> None:
        assert m.popen is not None
        m.popen.send_signal(signal.SIGKILL)
        m.popen.wait(timeout=15)

    def cpu_seconds(self) -> float:
        return sum(m.cpu_seconds() for m in self.members if m.alive)

    def new_member(self, name: str) -> Member:
        client, peer, metrics = free_ports(3)
        return Member(name, client, peer, metrics, self.root / name)

    def stop(self) -> None:
        everyone = self.members + self.learners
        for m in everyone:
            if m.alive:
                assert m.popen is not None
                m.popen.send_signal(signal.SIGTERM)
        for m in everyone:
            if m.popen is not None:
                try:
                    m.popen.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    m.popen.kill()
                    m.popen.wait()


@dataclass
class FlotillaCluster(Cluster):
    leader_metric: str = "etcd_server_is_leader"

    def program(self) -> list[str]:
        return [sys.executable, "-m", "flotilla.node.main"]


@dataclass
class EtcdCluster(Cluster):
    binary: Path = Path("/usr/bin/etcd")
    leader_metric: str = "etcd_server_is_leader"

    def program(self) -> list[str]:
        return [str(self.binary)]
