"""Readiness, liveness and startup probes: HTTP GET, TCP socket, gRPC health, exec.

Probes run from the host against the pod IP (the host reaches every pod over the
bridge), like a kubelet does; exec probes run inside the container's namespaces.
"""

from __future__ import annotations

import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any


def _port(spec: dict[str, Any], container: dict[str, Any]) -> int:
    """Resolve a numeric or named port."""
    port = spec.get("port")
    if isinstance(port, int):
        return port
    for p in container.get("ports", []):
        if p.get("name") == port:
            return int(p["containerPort"])
    return int(str(port))


def run_probe(
    probe: dict[str, Any],
    container: dict[str, Any],
    pod_ip: str,
    pid: int,
    env: dict[str, str],
) -> bool:
    """One probe attempt: True on success.

    ``pid`` and ``env`` are the container's process and environment: an exec probe
    joins that process's namespaces, so it sees the container's volumes and hosts file.
    """
    timeout = float(probe.get("timeoutSeconds", 1))
    try:
        if "httpGet" in probe:
            h = probe["httpGet"]
            scheme = h.get("scheme", "HTTP").lower()
            host = h.get("host") or pod_ip
            url = f"{scheme}://{host}:{_port(h, container)}{h.get('path', '/')}"
            req = urllib.request.Request(url)
            for header in h.get("httpHeaders", []):
                req.add_header(header["name"], header["value"])
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return bool(200 <= resp.status < 400)
        if "tcpSocket" in probe:
            t = probe["tcpSocket"]
            with socket.create_connection((pod_ip, _port(t, container)), timeout=timeout):
                return True
        if "grpc" in probe:
            return _grpc_probe(pod_ip, probe["grpc"], timeout)
        if "exec" in probe:
            argv = ["nsenter", "-t", str(pid), "-n", "-u", "-m", "--", *probe["exec"]["command"]]
            done = subprocess.run(argv, capture_output=True, timeout=timeout, env=env)
            return done.returncode == 0
    except (OSError, urllib.error.URLError, subprocess.TimeoutExpired, ValueError):
        return False
    return False


def _grpc_probe(pod_ip: str, spec: dict[str, Any], timeout: float) -> bool:
    """grpc.health.v1.Health/Check, SERVING or not.

    The two messages are tiny, so they are encoded by hand: no generated code and no
    grpcio-health-checking dependency, only grpcio (without it the probe fails).
    """
    try:
        import grpc
    except ImportError:
        return False
    service = spec.get("service", "").encode()
    request = (b"\x0a" + bytes([len(service)]) + service) if service else b""
    with grpc.insecure_channel(f"{pod_ip}:{spec['port']}") as channel:
        check = channel.unary_unary("/grpc.health.v1.Health/Check")
        try:
            response = check(request, timeout=timeout)
        except grpc.RpcError:
            return False
    return bool(response == HEALTH_SERVING)


# HealthCheckResponse{status: SERVING}: field 1, varint, value 1.
HEALTH_SERVING = b"\x08\x01"


@dataclass
class ProbeState:
    """Thresholds and timing of one probe, fed one result at a time."""

    probe: dict[str, Any] | None
    initial: bool  # the value before the first success/failure decision
    result: bool = field(init=False)
    _successes: int = 0
    _failures: int = 0
    _next: float = 0.0

    def __post_init__(self) -> None:
        self.result = self.initial if self.probe else True

    def reset(self, started_at: float) -> None:
        self.result = self.initial if self.probe else True
        self._successes = self._failures = 0
        delay = float(self.probe.get("initialDelaySeconds", 0)) if self.probe else 0.0
        self._next = started_at + delay

    @property
    def exhausted(self) -> bool:
        """As many consecutive failures as the probe tolerates (a startup probe gives up)."""
        return self.probe is not None and self._failures >= int(
            self.probe.get("failureThreshold", 3)
        )

    def due(self, now: float) -> bool:
        return self.probe is not None and now >= self._next

    def record(self, ok: bool, now: float) -> bool:
        """Feed one attempt; returns the (possibly changed) probe result."""
        assert self.probe is not None
        self._next = now + float(self.probe.get("periodSeconds", 10))
        if ok:
            self._successes += 1
            self._failures = 0
            if self._successes >= int(self.probe.get("successThreshold", 1)):
                self.result = True
        else:
            self._failures += 1
            self._successes = 0
            if self._failures >= int(self.probe.get("failureThreshold", 3)):
                self.result = False
        return self.result


def monotonic() -> float:
    return time.monotonic()
