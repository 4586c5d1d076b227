"""``flotilla local up``: a cluster of real flotilla-node processes on this machine.

Members listen on loopback with consecutive ports (clients 2379, 22379, 32379, ... as etcd's
Procfile does; peers on the next port up), keep their data under one directory that
survives restarts, and stop cleanly on Ctrl-C (SIGTERM to each, then wait).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class LocalMember:
    name: str
    client_port: int
    peer_port: int
    metrics_port: int

    @property
    def client_url(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://127.0.0.1:{self.peer_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}"


def plan(members: int, base_port: int) -> list[LocalMember]:
    return [
        LocalMember(f"m{i + 1}", base_port + i * 10, base_port + i * 10 + 1, base_port + i * 10 + 2)
        for i in range(members)
    ]


def command_for(
    m: LocalMember, cluster: list[LocalMember], data_root: Path, token: str, extra: list[str]
) -> list[str]:
    initial = ",".join(f"{o.name}={o.peer_url}" for o in cluster)
    return [
        sys.executable,
        "-m",
        "flotilla.node.main",
        "--name",
        m.name,
        "--data-dir",
        str(data_root / m.name),
        "--listen-client-urls",
        m.client_url,
        "--advertise-client-urls",
        m.client_url,
        "--listen-peer-urls",
        m.peer_url,
        "--initial-advertise-peer-urls",
        m.peer_url,
        "--listen-metrics-urls",
        m.metrics_url,
        "--initial-cluster",
        initial,
        "--initial-cluster-token",
        token,
        "--initial-cluster-state",
        "new",
        *extra,
    ]


def probe(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=0.5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()
    except OSError as err:
        return 0, str(err)


def status_line(m: LocalMember) -> str:
    code, _ = probe(m.metrics_url + "/health")
    if code == 0:
        return f"  {m.name:<4} {m.client_url:<24} down"
    health = "healthy" if code == 200 else "no leader"
    metrics = probe(m.metrics_url + "/metrics")[1]
    values = {}
    for line in metrics.splitlines():
        if line.startswith(("etcd_server_", "flotilla_server_")) and " " in line:
            name, value = line.rsplit(" ", 1)
            values[name] = value
    role = "leader" if values.get("etcd_server_is_leader") == "1.0" else "follower"
    term = values.get("flotilla_server_term", "?").split(".")[0]
    applied = values.get("etcd_server_proposals_applied_total", "?").split(".")[0]
    return (
        f"  {m.name:<4} {m.client_url:<24} {health:<9} {role:<8} term {term:<4} applied {applied}"
    )


def up(members: int, data_root: Path, base_port: int, extra: list[str]) -> int:
    data_root.mkdir(parents=True, exist_ok=True)
    cluster = plan(members, base_port)
    token = "flotilla-local"
    procs: list[tuple[LocalMember, subprocess.Popen[bytes]]] = []
    logs = data_root / "logs"
    logs.mkdir(exist_ok=True)
    print(f"Starting {members} members; data under {data_root}, logs under {logs}")
    for m in cluster:
        out = open(logs / f"{m.name}.log", "ab")  # noqa: SIM115 - owned by the child process
        cmd = command_for(m, cluster, data_root, token, extra)
        procs.append((m, subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)))
    endpoints = ",".join(m.client_url.removeprefix("http://") for m in cluster)
    (data_root / "endpoints.json").write_text(json.dumps([m.client_url for m in cluster]))
    print(f"Client endpoints: {endpoints}")
    print(f"Try:  ETCDCTL_API=3 etcdctl --endpoints={endpoints} put greeting hello")
    print(f"      ETCDCTL_API=3 etcdctl --endpoints={endpoints} endpoint status -w table")
    print("Ctrl-C stops the cluster; the data stays for the next `flotilla local up`.\n")
    stopping = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    last = ""
    try:
        while not stopping:
            lines = "\n".join(status_line(m) for m in cluster)
            if lines != last:
                print(time.strftime("%H:%M:%S"), "members:\n" + lines, flush=True)
                last = lines
            for m, p in procs:
                if p.poll() is not None and not stopping:
                    print(f"member {m.name} exited with {p.returncode}; see {logs}/{m.name}.log")
                    stopping = True
            time.sleep(1)
    finally:
        print("Stopping members ...")
        for _, p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for m, p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                print(f"member {m.name} did not stop in time; killing it")
                p.kill()
                p.wait()
        print("Stopped.")
    return 0


def default_data_root() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "flotilla" / "local"
