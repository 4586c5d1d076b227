"""A client that keeps writing through a cluster's client Service while operations run.

It writes one new key after another (``w/<seq>``), each through one of the addresses the
client Service routes to at that moment (the Ready pods of its Endpoints, refreshed every
second: the local Kubernetes has no ClusterIP routing, so the writer picks an endpoint the way
kube-proxy would, and moves to the next one when a write fails). It records every
acknowledged write with its time, and every failure. After an operation the test asks two
questions: is every acknowledged write still there, and how long was the longest stretch of
wall time in which writes kept failing?
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field

import grpc

from flotilla.node.api.etcdpb import rpc_pb2 as pb
from flotilla.node.api.etcdpb import rpc_pb2_grpc
from tests.kube.kubectl import kubectl

PREFIX = b"w/"
PUT_TIMEOUT_S = 1.0
PACE_S = 0.1  # one write per tenth of a second when all goes well: load, not a benchmark
REFRESH_S = 1.0


@dataclass
class Outage:
    """A run of consecutive failed writes: from the first failure to the next success."""

    started: float
    ended: float | None = None
    errors: list[str] = field(default_factory=list)

    def length(self, now: float) -> float:
        return (self.ended if self.ended is not None else now) - self.started


class Writer:
    def __init__(self, namespace: str, service: str) -> None:
        self.namespace, self.service = namespace, service
        self.acked: dict[bytes, bytes] = {}
        self.ack_times: list[float] = []
        self.failures = 0
        self.outages: list[Outage] = []
        self._endpoints: list[str] = []
        self._channels: dict[str, grpc.Channel] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._refresh_loop, daemon=True, name="writer-endpoints"),
            threading.Thread(target=self._write_loop, daemon=True, name="writer"),
        ]
        self._mark = 0.0

    # -- running ------------------------------------------------------------------------------

    def start(self) -> None:
        self._refresh()
        self._mark = time.monotonic()
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        for t in self._threads:
            t.join(timeout=10)
        for ch in self._channels.values():
            ch.close()

    def _refresh(self) -> None:
        out = kubectl(
            "get", "endpoints", self.service, "-n", self.namespace, "-o", "json", check=False
        )
        try:
            subsets = json.loads(out).get("subsets") or []
        except ValueError:
            return  # keep the last list; the API server was busy
        ips = sorted(a["ip"] for s in subsets for a in s.get("addresses") or [])
        with self._lock:
            self._endpoints = [f"{ip}:2379" for ip in ips]

    def _refresh_loop(self) -> None:
        while not self._stop.wait(REFRESH_S):
            self._refresh()

    def _stub(self, endpoint: str) -> rpc_pb2_grpc.KVStub:
        ch = self._channels.get(endpoint)
        if ch is None:
            ch = self._channels[endpoint] = grpc.insecure_channel(endpoint)
        return rpc_pb2_grpc.KVStub(ch)  # type: ignore[no-untyped-call]

    def _write_loop(self) -> None:
        seq, turn = 0, 0
        while not self._stop.is_set():
            with self._lock:
                endpoints = list(self._endpoints)
            seq += 1
            key, value = PREFIX + b"%08d" % seq, b"v%d" % seq
            started = time.monotonic()
            error = None
            if not endpoints:
                error = "the client Service has no ready endpoint"
            else:
                turn += 1
                endpoint = endpoints[turn % len(endpoints)]
                try:
                    self._stub(endpoint).Put(
                        pb.PutRequest(key=key, value=value), timeout=PUT_TIMEOUT_S
                    )
                except grpc.RpcError as exc:
                    call: grpc.Call = exc  # type: ignore[assignment]
                    error = f"{endpoint}: {call.code().name}: {call.details()}"
            now = time.monotonic()
            with self._lock:
                if error is None:
                    self.acked[key] = value
                    self.ack_times.append(now)
                    if self.outages and self.outages[-1].ended is None:
                        self.outages[-1].ended = now
                        since = started - self.outages[-1].started
                        took = now - started
                        self.outages[-1].errors.append(f"+{since:.2f}s, {took:.2f}s: acknowledged")
                else:
                    self.failures += 1
                    if not self.outages or self.outages[-1].ended is not None:
                        self.outages.append(Outage(started))
                    if len(self.outages[-1].errors) < 5:
                        # When and how long each failed attempt took: the story of an outage.
                        since = started - self.outages[-1].started
                        took = now - started
                        self.outages[-1].errors.append(f"+{since:.2f}s, {took:.2f}s: {error}")
            # Pace successful writes; after a failure move on to the next endpoint at once.
            if error is None or not endpoints:
                self._stop.wait(PACE_S)

    # -- checking -----------------------------------------------------------------------------

    def check(self, endpoint: str, what: str, limit_s: float = 3.0) -> str:
        """Assert every write acknowledged so far is stored, and no outage since the last
        check lasted longer than ``limit_s``; returns a one-line summary for the log."""
        now = time.monotonic()
        with self._lock:
            acked = dict(self.acked)
            recent = [o for o in self.outages if o.ended is None or o.ended >= self._mark]
            acks = sum(1 for t in self.ack_times if t >= self._mark)
            since, self._mark = self._mark, now
        stored = read_prefix(endpoint)
        lost = sorted(k for k, v in acked.items() if stored.get(k) != v)
        assert not lost, f"{what}: {len(lost)} acknowledged writes missing, e.g. {lost[:5]}"
        assert acks > 0, f"{what}: no write was acknowledged in {now - since:.0f}s"
        worst = max(recent, key=lambda o: o.length(now), default=None)
        longest = worst.length(now) if worst else 0.0
        assert longest <= limit_s, (
            f"{what}: writes failed for {longest:.1f}s in a row, from the first failure to the "
            f"next acknowledged write (limit {limit_s}s): {worst.errors if worst else []}"
        )
        return (
            f"{what}: {acks} writes acknowledged in {now - since:.0f}s, all {len(acked)} so far "
            f"stored; longest failing stretch {longest:.2f}s"
            + (f" {worst.errors}" if worst is not None and longest > 0.5 else "")
        )


def read_prefix(endpoint: str) -> dict[bytes, bytes]:
    """Every ``w/`` key and its value, read linearizably from one member."""
    with grpc.insecure_channel(endpoint) as ch:
        stub = rpc_pb2_grpc.KVStub(ch)  # type: ignore[no-untyped-call]
        end = PREFIX[:-1] + bytes([PREFIX[-1] + 1])
        resp = stub.Range(pb.RangeRequest(key=PREFIX, range_end=end), timeout=10)
    return {kv.key: kv.value for kv in resp.kvs}
