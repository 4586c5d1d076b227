"""One randomized fault-injection run: workload + watcher + nemesis, then every checker.

Shared by the CI test (a few minutes) and the soak command (an hour).
"""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from flotilla.node.api.etcdpb import rpc_pb2 as pb
from flotilla.node.api.etcdpb import rpc_pb2_grpc as rpc

from ..node.netns import NetnsCluster
from .checker import Verdict, check
from .leases import LeaseWorkload, LockWorkload
from .models import REGISTER
from .nemesis import Nemesis
from .workload import PREFIX, Counts, Watcher, Workload, prefix_end, replay, watch_anomalies


@dataclass
class Summary:
    seed: int
    counts: Counts = field(default_factory=Counts)
    faults: Counter[str] = field(default_factory=Counter)
    rounds: list[list[str]] = field(default_factory=list)
    watch_events: int = 0
    lease_checks: int = 0
    lock_holds: int = 0
    verdict: str = ""
    anomalies: list[str] = field(default_factory=list)

    def text(self) -> str:
        c = self.counts
        lines = [
            f"seed {self.seed}: {c.ok + c.fail + c.unknown} operations "
            f"(ok {c.ok}, failed {c.fail}, unknown {c.unknown}), "
            f"{self.watch_events} watch events, {self.lease_checks} live-lease checks, "
            f"{self.lock_holds} lock holds, {sum(self.faults.values())} faults injected",
            "faults: " + ", ".join(f"{k} {v}" for k, v in sorted(self.faults.items())),
            f"linearizability: {self.verdict}",
            f"anomalies found: {len(self.anomalies)}",
        ]
        lines += [f"  {a}" for a in self.anomalies]
        return "\n".join(lines)


def current_revision(endpoint: str) -> int:
    with grpc.insecure_channel(endpoint) as ch:
        resp = rpc.KVStub(ch).Range(pb.RangeRequest(key=b"lin/"), timeout=5)
        return int(resp.header.revision)


def last_write(endpoint: str, prefix: bytes) -> int:
    """The revision of the last write under ``prefix`` (the runs never delete)."""
    with grpc.insecure_channel(endpoint) as ch:
        req = pb.RangeRequest(key=prefix, range_end=prefix_end(prefix))
        resp = rpc.KVStub(ch).Range(req, timeout=5)
        return max((kv.mod_revision for kv in resp.kvs), default=0)


def run(
    cluster: NetnsCluster,
    seed: int,
    seconds: float,
    faults: list[str],
    log: bool = True,
    check_budget: float = 60,
    dump_dir: Path | None = None,
) -> Summary:
    """Run the workload, the watcher and the nemesis for ``seconds``; judge everything.

    With anomalies and a ``dump_dir``, the history and the watch events are written there
    (``history-<seed>.jsonl``, ``watch-<seed>.jsonl``) for a closer look.
    """
    rng = random.Random(seed)
    summary = Summary(seed)
    endpoints = [m.endpoint for m in cluster.members if m.alive]
    start_rev = current_revision(cluster.wait_leader().endpoint) + 1
    tag = f"s{seed}-"
    workload = Workload(endpoints, seed, tag=tag)
    watcher = Watcher(endpoints, start_rev, seed, prefix=PREFIX + tag.encode())
    nemesis = Nemesis(cluster, rng, endpoints)
    lease_load = LeaseWorkload(endpoints, seed, b"lease/" + tag.encode())
    lock_load = LockWorkload(endpoints, seed, b"lock/" + tag.encode())
    workload.start()
    watcher.start()
    lease_load.start()
    lock_load.start()
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            done = nemesis.run_round(faults, hold=rng.uniform(1.5, 4.0))
            summary.rounds.append(done)
            if log:
                print(f"[{seed}] " + "; ".join(done), flush=True)
            time.sleep(rng.uniform(0.5, 1.5))  # a calm spell: clients make progress again
    finally:
        nemesis.heal()
        history = workload.stop()
        lease_load.stop()
        lock_load.stop()
    summary.counts = workload.counts
    summary.faults = nemesis.injected
    try:
        nemesis.settle()
    except AssertionError as exc:
        watcher.stop()
        summary.anomalies += nemesis.crashes
        summary.anomalies.append(f"the cluster did not recover after healing: {exc}")
        return summary
    watcher.stop()
    summary.watch_events = len(watcher.events)

    result = check(REGISTER, history, budget=check_budget)
    summary.verdict = result.verdict.value
    if result.verdict == Verdict.ILLEGAL:
        summary.anomalies.append(result.explain(REGISTER.describe))

    lead = cluster.wait_leader(nemesis.running())
    final = last_write(lead.endpoint, watcher.prefix)
    events = replay(lead.endpoint, start_rev, final, prefix=watcher.prefix)
    summary.anomalies += watch_anomalies(watcher.events, events, history, watcher.sources)

    lease_load.check_expired([m.endpoint for m in nemesis.running()])
    lock_load.check()
    summary.lease_checks = lease_load.checked_live
    summary.lock_holds = len(lock_load.holds)
    summary.anomalies += lease_load.anomalies + lock_load.anomalies + nemesis.crashes

    hashes = nemesis.hashes()
    if len(set(hashes.values())) != 1:
        summary.anomalies.append(f"members disagree on HashKV: {hashes}")
    if summary.anomalies and dump_dir is not None:
        with open(dump_dir / f"history-{seed}.jsonl", "w") as out:
            for op in history:
                ret = None if op.unknown else op.ret
                out.write(json.dumps([op.client, op.input, op.output, op.call, ret]) + "\n")
        with open(dump_dir / f"watch-{seed}.jsonl", "w") as out:
            for ev, src in zip(watcher.events, watcher.sources, strict=True):
                out.write(json.dumps([ev.revision, ev.key, ev.value, src]) + "\n")
        (dump_dir / f"summary-{seed}.txt").write_text(
            summary.text() + "\n" + "\n".join("; ".join(r) for r in summary.rounds)
        )
    return summary
