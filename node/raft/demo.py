"""A guided run of the Raft core: five members in one process, a story told step by step.

The members are real ``RaftCore`` instances; only the network and the disk are replaced by
lists in memory, so what is shown is exactly what the consensus code decides.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterable

from .core import Config, InitialState, RaftCore, Role
from .types import EntryType, Message


class DemoCluster:
    def __init__(self, voters: int, spares: int, seed: int) -> None:
        rng = random.Random(seed)
        boot = InitialState.bootstrap(range(1, voters + 1))
        self.cores: dict[int, RaftCore] = {}
        for i in range(1, voters + spares + 1):
            state = InitialState(snapshot=boot.snapshot) if i <= voters else InitialState()
            self.cores[i] = RaftCore(Config(i), state, random.Random(rng.random()))
        self.cut: set[int] = set()
        self.applied: dict[int, int] = dict.fromkeys(self.cores, 0)

    def pump(self) -> None:
        busy = True
        while busy:
            busy = False
            outbox: list[Message] = []
            for node_id, core in self.cores.items():
                if core.has_ready():
                    busy = True
                    rd = core.ready()
                    outbox += rd.messages + rd.messages_after_persist
                    self.applied[node_id] += sum(
                        1 for e in rd.committed_entries if e.type == EntryType.NORMAL and e.data
                    )
                    core.advance(rd)
            for m in outbox:
                if m.frm not in self.cut and m.to not in self.cut:
                    self.cores[m.to].step(m)

    def tick(self, n: int, only: Iterable[int] | None = None) -> None:
        ids = list(only) if only is not None else list(self.cores)
        for _ in range(n):
            for i in ids:
                self.cores[i].tick()
            self.pump()

    def leader(self) -> int | None:
        leaders = [c for c in self.cores.values() if c.role == Role.LEADER and c.id not in self.cut]
        return max(leaders, key=lambda c: c.term).id if leaders else None

    def wait_for_leader(self) -> int:
        for _ in range(200):
            lead = self.leader()
            if lead is not None:
                return lead
            self.tick(1)
        raise RuntimeError("no leader elected")

    def table(self) -> str:
        rows = []
        for i, c in self.cores.items():
            role = "down/cut" if i in self.cut else c.role.value
            conf = "voter" if c.conf.is_voter(i) else ("learner" if i in c.conf.learners else "-")
            rows.append(
                f"    member {i}: {role:<9} term {c.term:<3} commit {c.commit:<6} "
                f"applied writes {self.applied[i]:<6} {conf}"
            )
        return "\n".join(rows)


def run(seed: int = 7, writes: int = 2000) -> None:
    def say(text: str) -> None:
        print(f"\n== {text}")

    c = DemoCluster(voters=3, spares=2, seed=seed)
    say("Three members start; the first election timeout makes one of them leader.")
    lead = c.wait_for_leader()
    print(c.table())

    say(f"A client writes {writes} entries in batches of 100 through leader {lead}.")
    started = time.perf_counter()
    for _ in range(writes // 100):
        c.cores[lead].propose([b"value"] * 100)
        c.pump()
    rate = writes / (time.perf_counter() - started)
    print(c.table())
    print(f"    ({rate:,.0f} entries/s through the consensus code alone)")

    say(f"Leader {lead} is cut off. Check-quorum makes it step down; the others elect anew.")
    c.cut.add(lead)
    c.tick(40)
    old, lead = lead, c.wait_for_leader()
    c.cores[lead].propose([b"after-failover"])
    c.pump()
    print(c.table())

    say(f"Member {old} comes back: pre-vote keeps it from disturbing leader {lead}.")
    c.cut.clear()
    c.tick(5)
    print(c.table())

    say("Scale 3 -> 5: members 4 and 5 join as learners, catch up, then one joint change.")
    c.cores[lead].propose_conf_change({1, 2, 3}, {4, 5})
    c.tick(3)
    c.cores[lead].propose_conf_change({1, 2, 3, 4, 5})
    c.tick(3)
    print(f"    configuration: {c.cores[lead].conf}")
    print(c.table())

    say(f"Leadership moves from {lead} to member 5.")
    c.cores[lead].transfer_leader(5)
    c.tick(3)
    print(c.table())


if __name__ == "__main__":
    run()
