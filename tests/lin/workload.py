"""Clients that record what they did: the histories the checkers judge.

Register workers (threads, each with its own gRPC channel) run get / put / compare-and-set
on a small set of keys through any member, noting invocation and completion on the
monotonic clock and the outcome:

- **ok**: the response says what happened;
- **fail**: certainly not applied (an error the server gives before proposing anything,
  e.g. INVALID_ARGUMENT); left out of the history;
- **unknown**: a timeout or a broken connection. The write may have been proposed and may
  still commit, so it is kept with an unknown outcome (completion at infinity). A read that
  failed had no effect and is left out.

A watcher follows the key prefix across failures, resuming after the last revision it saw
on whatever member answers, and records every event.
"""

from __future__ import annotations

import itertools
import math
import queue
import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import grpc

from flotilla.node.api.etcdpb import rpc_pb2 as pb
from flotilla.node.api.etcdpb import rpc_pb2_grpc as rpc

from .checker import Op

PREFIX = b"lin/"
DEFINITE_FAILURES = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.OUT_OF_RANGE,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}
"""Refused before anything was proposed. Everything else (UNAVAILABLE, DEADLINE_EXCEEDED, a
reset connection, etcd's "request timed out") may hide a write that still commits, except a
connection that was never made."""


def definitely_not_applied(err: grpc.RpcError) -> bool:
    """True if the request cannot have been proposed: refused, or never sent at all."""
    code = err.code()  # type: ignore[attr-defined]
    if code in DEFINITE_FAILURES:
        return True
    details = str(err.details() or "")  # type: ignore[attr-defined]
    # grpc fails fast, before sending, when it cannot connect (member down or cut off).
    return code == grpc.StatusCode.UNAVAILABLE and "failed to connect" in details


def prefix_end(prefix: bytes) -> bytes:
    return prefix[:-1] + bytes([prefix[-1] + 1])


@dataclass
class Counts:
    ok: int = 0
    fail: int = 0
    unknown: int = 0


class Workload:
    """Register workers over ``keys`` keys; ``history`` holds ops once ``stop`` returned."""

    def __init__(
        self,
        endpoints: list[str],
        seed: int,
        workers: int = 6,
        keys: int = 8,
        timeout: float = 2.0,
        tag: str = "",
    ) -> None:
        self.endpoints = endpoints
        self.seed = seed
        self.n_workers = workers
        # A tag per run keeps runs on one cluster apart (each starts from absent keys).
        self.keys = [f"{tag}k{i}" for i in range(keys)]
        self.timeout = timeout
        self.history: list[Op] = []
        self.counts = Counts()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._values = itertools.count()

    def start(self) -> None:
        for w in range(self.n_workers):
            t = threading.Thread(target=self._run, args=(w,), name=f"lin-worker-{w}", daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self) -> list[Op]:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=3 * self.timeout + 5)
        return self.history

    def _record(self, op: Op | None, outcome: str) -> None:
        with self._lock:
            setattr(self.counts, outcome, getattr(self.counts, outcome) + 1)
            if op is not None:
                self.history.append(op)

    def _run(self, worker: int) -> None:
        rng = random.Random(self.seed * 1000 + worker)
        channel = grpc.insecure_channel(rng.choice(self.endpoints))
        kv = rpc.KVStub(channel)
        # Revisions this worker learned per key, for its compare-and-sets.
        seen: dict[str, int] = {}
        try:
            while not self._stop.is_set():
                key = rng.choice(self.keys)
                kind = rng.choices(["get", "put", "cas"], weights=[4, 3, 3])[0]
                value = f"w{worker}-{next(self._values)}"
                inp: tuple[object, ...]
                if kind == "get":
                    inp = ("get", key)
                elif kind == "put":
                    inp = ("put", key, value)
                else:
                    inp = ("cas", key, seen.get(key, 0), value)
                call = time.monotonic()
                try:
                    out = self._one(kv, inp, seen)
                    self._record(Op(worker, inp, out, call, time.monotonic()), "ok")
                except grpc.RpcError as err:
                    if definitely_not_applied(err):
                        self._record(None, "fail")
                    else:
                        # A read that failed changed nothing; a write may still commit.
                        op = None if kind == "get" else Op(worker, inp, None, call, math.inf)
                        self._record(op, "unknown")
                    # The member may be down, partitioned or paused: try another one.
                    channel.close()
                    channel = grpc.insecure_channel(rng.choice(self.endpoints))
                    kv = rpc.KVStub(channel)
                    self._stop.wait(0.05)
        finally:
            channel.close()

    def _one(self, kv: rpc.KVStub, inp: tuple[object, ...], seen: dict[str, int]) -> object:
        key = str(inp[1])
        k = PREFIX + key.encode()
        if inp[0] == "get":
            resp = kv.Range(pb.RangeRequest(key=k), timeout=self.timeout)
            if resp.kvs:
                seen[key] = resp.kvs[0].mod_revision
                return (resp.kvs[0].value.decode(), resp.kvs[0].mod_revision)
            seen[key] = 0
            return (None, 0)
        value = str(inp[-1]).encode()
        if inp[0] == "put":
            presp = kv.Put(pb.PutRequest(key=k, value=value), timeout=self.timeout)
            seen[key] = presp.header.revision
            return presp.header.revision
        cmp = pb.Compare(
            key=k, target=pb.Compare.MOD, result=pb.Compare.EQUAL, mod_revision=int(str(inp[2]))
        )
        put = pb.RequestOp(request_put=pb.PutRequest(key=k, value=value))
        get = pb.RequestOp(request_range=pb.RangeRequest(key=k))
        tresp = kv.Txn(
            pb.TxnRequest(compare=[cmp], success=[put], failure=[get]), timeout=self.timeout
        )
        if tresp.succeeded:
            seen[key] = tresp.header.revision
            return (True, tresp.header.revision)
        kvs = tresp.responses[0].response_range.kvs
        seen[key] = kvs[0].mod_revision if kvs else 0
        return (False, kvs[0].value.decode(), kvs[0].mod_revision) if kvs else (False, None, 0)


def _feed(q: queue.Queue[pb.WatchRequest | None]) -> Iterator[pb.WatchRequest]:
    """A request stream that stays open until ``None`` is queued (closing it ends a watch)."""
    while (item := q.get()) is not None:
        yield item


def _create(prefix: bytes, start_revision: int) -> pb.WatchRequest:
    return pb.WatchRequest(
        create_request=pb.WatchCreateRequest(
            key=prefix, range_end=prefix_end(prefix), start_revision=start_revision
        )
    )


@dataclass
class WatchEvent:
    revision: int
    key: str
    value: str


@dataclass
class Watcher:
    """Follows ``prefix`` from ``start_revision`` across member failures."""

    endpoints: list[str]
    start_revision: int
    seed: int
    prefix: bytes = PREFIX
    events: list[WatchEvent] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    """Per event: the member and the stream (counted from 0) it came on, for diagnosis."""
    reconnects: int = 0

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._call: grpc.Future | None = None
        self._thread = threading.Thread(target=self._run, name="lin-watcher", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        call = self._call
        if call is not None:
            call.cancel()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        rng = random.Random(self.seed)
        while not self._stop.is_set():
            endpoint = rng.choice(self.endpoints)
            nxt = self.events[-1].revision + 1 if self.events else self.start_revision
            requests: queue.Queue[pb.WatchRequest | None] = queue.Queue()
            requests.put(_create(self.prefix, nxt))
            with grpc.insecure_channel(endpoint) as channel:
                call = rpc.WatchStub(channel).Watch(_feed(requests))
                self._call = call
                try:
                    for resp in call:
                        if resp.canceled:
                            raise AssertionError(f"watch canceled: {resp.cancel_reason}")
                        for ev in resp.events:
                            self.events.append(
                                WatchEvent(
                                    ev.kv.mod_revision, ev.kv.key.decode(), ev.kv.value.decode()
                                )
                            )
                            self.sources.append(
                                f"{endpoint} stream {self.reconnects} from {nxt}, "
                                f"header {resp.header.revision}"
                            )
                        if self._stop.is_set():
                            break
                except grpc.RpcError:
                    pass
                finally:
                    requests.put(None)
                    call.cancel()
            self.reconnects += 1
            self._stop.wait(0.1)


def watch_anomalies(
    seen: list[WatchEvent],
    replay: list[WatchEvent],
    history: list[Op],
    sources: list[str] | None = None,
) -> list[str]:
    """What is wrong with what a watcher saw, against a replay of the whole prefix.

    ``replay`` comes from a fresh watch from the same start revision after the run: the
    watcher must have seen exactly a prefix of it (no gap, no duplicate, revisions strictly
    increasing), and the replay must agree with the register history: every acknowledged
    write at its revision with its value, every value one that some client wrote.
    """
    problems = []
    for a, b in itertools.pairwise(seen):
        if b.revision <= a.revision:
            problems.append(f"watch revisions not increasing: {a} then {b}")
            break
    if seen != replay[: len(seen)]:
        for i, (a, b) in enumerate(zip(seen, replay, strict=False)):
            if a != b:
                where = ""
                if sources and i > 0:
                    where = f" (came on {sources[i]}; the one before on {sources[i - 1]})"
                problems.append(f"watch event {i} is {a}, the replay says {b}{where}")
                break
        else:
            problems.append(f"watch saw {len(seen)} events, the replay has only {len(replay)}")
    by_rev = {e.revision: e for e in replay}
    written = set()
    for op in history:
        if op.input[0] in ("put", "cas"):
            written.add((op.input[1], op.input[-1]))
            if op.output is None:
                continue
            rev = op.output if op.input[0] == "put" else op.output[1]
            if op.input[0] == "cas" and not op.output[0]:
                continue
            ev = by_rev.get(rev)
            want = WatchEvent(rev, (PREFIX.decode() + op.input[1]), op.input[-1])
            if ev != want:
                problems.append(f"acknowledged write {want} is {ev} in the replay")
    for ev in replay:
        if (ev.key.removeprefix(PREFIX.decode()), ev.value) not in written:
            problems.append(f"event {ev} carries a value no client wrote")
    return problems[:20]


def replay(
    endpoint: str, start_revision: int, upto: int, prefix: bytes = PREFIX, timeout: float = 20
) -> list[WatchEvent]:
    """Every event under ``prefix`` from ``start_revision`` through ``upto``, from one member."""
    out: list[WatchEvent] = []
    if upto < start_revision:
        return out
    requests: queue.Queue[pb.WatchRequest | None] = queue.Queue()
    requests.put(_create(prefix, start_revision))
    with grpc.insecure_channel(endpoint) as channel:
        call = rpc.WatchStub(channel).Watch(_feed(requests), timeout=timeout)
        try:
            for resp in call:
                if resp.canceled:
                    raise AssertionError(f"replay watch canceled: {resp.cancel_reason}")
                for ev in resp.events:
                    out.append(
                        WatchEvent(ev.kv.mod_revision, ev.kv.key.decode(), ev.kv.value.decode())
                    )
                if out and out[-1].revision >= upto:
                    break
        finally:
            requests.put(None)
            call.cancel()
    return out
