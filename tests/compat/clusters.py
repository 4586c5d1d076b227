"""A Flotilla cluster and a real etcd cluster, started the same way, for side-by-side tests.

Both are three members on loopback with temporary data directories and free ports, started
with the same etcd-style flags. A ``Target`` wraps one cluster with what the tests need:
its endpoints and an ``etcdctl`` bound to them.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from tests.node.procs import Proc, ProcessCluster, etcdctl, free_ports, wait_for

ETCD_BINARY = os.environ.get("FLOTILLA_COMPAT_ETCD", "/usr/bin/etcd")


class Cluster(Protocol):
    @property
    def endpoints(self) -> str: ...

    def logs(self) -> str: ...

    def stop(self) -> None: ...


@dataclass
class EtcdMember:
    name: str
    client_port: int
    peer_port: int
    data_dir: Path
    log_path: Path
    popen: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://127.0.0.1:{self.peer_port}"


@dataclass
class EtcdCluster:
    """Real etcd members, with the same flags ``ProcessCluster`` gives flotilla-node."""

    root: Path
    size: int
    token: str = "etcd-compat"
    members: list[EtcdMember] = field(default_factory=list)

    def __post_init__(self) -> None:
        ports = free_ports(2 * self.size)
        for i in range(self.size):
            name = f"m{i + 1}"
            self.members.append(
                EtcdMember(
                    name,
                    ports[2 * i],
                    ports[2 * i + 1],
                    self.root / name,
                    self.root / f"{name}.log",
                )
            )

    @property
    def initial_cluster(self) -> str:
        return ",".join(f"{m.name}={m.peer_url}" for m in self.members)

    def command(self, m: EtcdMember, state: str = "new") -> list[str]:
        client_url = f"http://{m.endpoint}"
        return [
            ETCD_BINARY,
            f"--name={m.name}",
            f"--data-dir={m.data_dir}",
            f"--listen-client-urls={client_url}",
            f"--advertise-client-urls={client_url}",
            f"--listen-peer-urls={m.peer_url}",
            f"--initial-advertise-peer-urls={m.peer_url}",
            f"--initial-cluster={self.initial_cluster}",
            f"--initial-cluster-token={self.token}",
            f"--initial-cluster-state={state}",
            "--heartbeat-interval=50",
            "--election-timeout=500",
            "--logger=zap",
            "--log-outputs=stderr",
        ]

    def start(self, m: EtcdMember | None = None, state: str = "new") -> None:
        for p in [m] if m else self.members:
            log = open(p.log_path, "ab")  # noqa: SIM115 - owned by the child
            p.popen = subprocess.Popen(self.command(p, state), stdout=log, stderr=subprocess.STDOUT)

    def add_member(self, name: str) -> EtcdMember:
        """A new member's ports and directories, in the member list used by --initial-cluster."""
        client_port, peer_port = free_ports(2)
        m = EtcdMember(name, client_port, peer_port, self.root / name, self.root / f"{name}.log")
        self.members.append(m)
        return m

    @property
    def endpoints(self) -> str:
        return ",".join(m.endpoint for m in self.members)

    def stop(self) -> None:
        for m in self.members:
            if m.popen is not None and m.popen.poll() is None:
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


@dataclass
class Target:
    """One cluster under test, named ``flotilla`` or ``etcd``."""

    name: str
    cluster: Cluster
    initial_revision: int = -1

    @property
    def endpoints(self) -> str:
        return self.cluster.endpoints

    @property
    def member_endpoints(self) -> list[str]:
        return self.endpoints.split(",")

    def ctl(
        self,
        *args: str,
        check: bool = True,
        stdin: str | None = None,
        endpoints: str | None = None,
        timeout: float = 15,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``etcdctl`` against this cluster; with ``check``, fail on a non-zero exit."""
        result = etcdctl(
            endpoints or self.endpoints, *args, check=False, stdin=stdin, timeout=timeout
        )
        if check and result.returncode != 0:
            errors = [ln for ln in result.stderr.splitlines() if not ln.startswith('{"level"')]
            raise AssertionError(
                f"[{self.name}] etcdctl {' '.join(args)} exited {result.returncode}: "
                + "\n".join(errors).strip()
            )
        return result

    def new_member(self, name: str) -> Joiner:
        """A member to add: ports and directories picked, in --initial-cluster, not started."""
        c = self.cluster
        if isinstance(c, EtcdCluster):
            m = c.add_member(name)
            return Joiner(self, m, m.peer_url, m.endpoint)
        assert isinstance(c, ProcessCluster)
        client, peer, metrics = free_ports(3)
        p = Proc(name, client, peer, metrics, c.root / name, c.root / f"{name}.log")
        c.members.append(p)
        return Joiner(self, p, p.peer_url, p.endpoint)

    def json(self, *args: str, endpoints: str | None = None) -> Any:
        return json.loads(self.ctl(*args, "-w", "json", endpoints=endpoints).stdout)

    def json_lines(self, *args: str, endpoints: str | None = None) -> list[Any]:
        """Commands that print one JSON document per endpoint print them as a JSON array."""
        doc = self.json(*args, endpoints=endpoints)
        return doc if isinstance(doc, list) else [doc]

    def revision(self) -> int:
        """The cluster's current revision, read linearizably (0 is omitted from JSON)."""
        return int(self.json("get", "compat/revision-probe")["header"].get("revision", 0))


@dataclass
class Joiner:
    """A member joining a running cluster (``--initial-cluster-state existing``)."""

    target: Target
    member: Proc | EtcdMember
    peer_url: str
    endpoint: str

    def start(self) -> None:
        c, m = self.target.cluster, self.member
        if isinstance(c, EtcdCluster):
            assert isinstance(m, EtcdMember)
            c.start(m, state="existing")
            return
        assert isinstance(c, ProcessCluster) and isinstance(m, Proc)
        log = open(m.log_path, "ab")  # noqa: SIM115 - owned by the child
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        m.popen = subprocess.Popen(
            c.command(m, "existing"), stdout=log, stderr=subprocess.STDOUT, env=env
        )

    @property
    def popen(self) -> subprocess.Popen[bytes] | None:
        return self.member.popen

    def discard(self) -> None:
        """Stop the process if it still runs and forget the member."""
        p = self.member.popen
        if p is not None and p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        members: list[Any] = self.target.cluster.members  # type: ignore[attr-defined]
        members.remove(self.member)


def etcd_available() -> bool:
    return shutil.which(ETCD_BINARY) is not None


def start_both(root: Path, attempts: int = 3) -> tuple[ProcessCluster, EtcdCluster]:
    """Start both clusters at once (they form in parallel) and wait until both are healthy.

    Free ports are picked before the processes bind them, so another process on the machine
    can take one in between; a member that exits at startup makes the attempt start over
    on fresh ports.
    """
    for attempt in range(1, attempts + 1):
        base = root / f"attempt{attempt}"
        flotilla = ProcessCluster(base / "flotilla", 3, token="compat")
        etcd = EtcdCluster(base / "etcd", 3)
        for sub in ("flotilla", "etcd"):
            (base / sub).mkdir(parents=True, exist_ok=True)
        flotilla.start()
        etcd.start()
        try:
            outcome = wait_for(
                "both clusters to form", functools.partial(formed, flotilla, etcd), timeout=40
            )
        except BaseException:
            print(flotilla.logs())
            print(etcd.logs())
            flotilla.stop()
            etcd.stop()
            raise
        if outcome == "formed":
            return flotilla, etcd
        flotilla.stop()
        etcd.stop()
    print(flotilla.logs())
    print(etcd.logs())
    raise AssertionError(f"a member exited while starting, {attempts} times")


def formed(flotilla: ProcessCluster, etcd: EtcdCluster) -> str | None:
    """ "exited" if a member exited; "formed" once every member answers ``endpoint health``."""
    procs = [m.popen for m in flotilla.members] + [m.popen for m in etcd.members]
    if not all(p is not None and p.poll() is None for p in procs):
        return "exited"
    healthy = all(
        etcdctl(c.endpoints, "endpoint", "health", check=False).returncode == 0
        for c in (flotilla, etcd)
    )
    return "formed" if healthy else None
