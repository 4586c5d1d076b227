"""Throughput of the Raft core alone: three members in memory, no disk, no network.

Each driver turn proposes one batch on the leader, then every member takes its Ready,
"persists" it (nothing to do), hands messages to their targets and advances. Committed
entries per second are counted at the leader's apply.

    python -m bench.raft_core [--seconds 3]
"""

from __future__ import annotations

import argparse
import time

from flotilla.node.raft.core import Config, InitialState, RaftCore, Role
from flotilla.node.raft.types import Message

TARGET_BATCH_100 = 100_000


def make_cluster() -> dict[int, RaftCore]:
    initial = InitialState.bootstrap([1, 2, 3])
    cores = {i: RaftCore(Config(i), InitialState(snapshot=initial.snapshot)) for i in (1, 2, 3)}
    cores[1].campaign()
    pump(cores)
    assert cores[1].role == Role.LEADER
    return cores


def pump(cores: dict[int, RaftCore]) -> int:
    """Run readies and deliver messages until quiet; returns entries applied on member 1."""
    applied = 0
    busy = True
    while busy:
        busy = False
        outbox: list[Message] = []
        for node_id, core in cores.items():
            if core.has_ready():
                busy = True
                rd = core.ready()
                outbox += rd.messages
                outbox += rd.messages_after_persist
                if node_id == 1:
                    applied += len(rd.committed_entries)
                core.advance(rd)
        for m in outbox:
            cores[m.to].step(m)
    return applied


def run(batch: int, seconds: float) -> float:
    cores = make_cluster()
    leader = cores[1]
    payload = [b"x" * 256] * batch
    applied = 0
    start = time.perf_counter()
    deadline = start + seconds
    while time.perf_counter() < deadline:
        for _ in range(10):
            leader.propose(payload)
            applied += pump(cores)
    return applied / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--seconds", type=float, default=3.0)
    args = p.parse_args()
    print(f"{'batch':>6} {'entries/s':>12}")
    for batch in (1, 100):
        rate = run(batch, args.seconds)
        note = ""
        if batch == 100:
            verdict = "meets" if rate >= TARGET_BATCH_100 else "MISSES"
            note = f"  ({verdict} the target of {TARGET_BATCH_100:,}/s)"
        print(f"{batch:>6} {rate:>12,.0f}{note}")


if __name__ == "__main__":
    main()
