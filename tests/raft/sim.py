"""Randomized simulation of a Raft cluster under faults, checked after every step.

One seed fixes everything: message delays, drops, duplicates, partitions (one-way too),
crashes that lose what was not yet durable, restarts, membership changes (joint, learners,
removing the leader), leadership transfers, client writes and reads, snapshots. After every
step the cluster's checker verifies election safety, log matching, leader completeness,
state machine safety, monotonic commit and apply, and that every released read is
linearizable. At the end the faults stop, and every acknowledged write must be present on
every member of the final configuration.

Replay a seed:   python -m tests.raft.sim --seed 17 --voters 5 --steps 2000
Soak:            python -m tests.raft.sim --seeds 100000 --steps 5000
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from dataclasses import dataclass

from flotilla.node.raft.core import Config, catch_up
from flotilla.node.raft.errors import RaftError

from .cluster import Cluster, InvariantViolation

TICK_EVERY = 4  # virtual time units between ticks of one member


@dataclass
class SimResult:
    seed: int
    voters: int
    steps: int
    writes_acked: int
    reads_checked: int
    max_commit: int
    elections: int
    conf_changes: int


def replay_command(seed: int, voters: int, steps: int) -> str:
    return f"python -m tests.raft.sim --seed {seed} --voters {voters} --steps {steps}"


class Simulation:
    def __init__(self, seed: int, voters: int, steps: int) -> None:
        self.seed = seed
        self.voters = voters
        self.steps = steps
        spares = 2
        cluster_rng_seed = seed * 1000 + voters
        self.lease_reads = seed % 3 == 0
        self.pre_vote = seed % 4 != 1

        def config(i: int) -> Config:
            return Config(
                i,
                election_tick=10,
                heartbeat_tick=2,
                lease_reads=self.lease_reads,
                pre_vote=self.pre_vote,
                max_msg_entries=8 if seed % 2 else 64,
                max_inflight_msgs=4,
                max_msg_bytes=4096,
            )

        self.c = Cluster(voters, spares=spares, seed=cluster_rng_seed, config=config)
        self.rng = self.c.rng
        self.phase_offset = {i: self.rng.randrange(TICK_EVERY) for i in self.c.members}
        for m in self.c.members.values():
            m.snapshot_every = self.rng.choice([0, 15, 40])
            m.keep_entries = self.rng.choice([0, 3, 10])
        self.c.announce_chance = self.rng.choice([1.0, 0.3, 0.02])
        self.write_seq = 0
        self.read_seq = 0
        self.conf_changes = 0
        # Members standing still (a stopped process, a starved machine): id -> (since, until).
        self.paused: dict[int, tuple[int, int]] = {}

    # -- faults and clients ---------------------------------------------------------------

    def _random_fault(self) -> None:
        c, rng = self.c, self.rng
        ids = list(c.members)
        roll = rng.random()
        if roll < 0.25:
            # Prefer a member with a write in flight: that is where durability bugs hide.
            busy = [i for i in ids if c.members[i].phase == 1]
            victim = rng.choice(busy if busy and rng.random() < 0.5 else ids)
            if c.members[victim].alive:
                c.crash(victim)
        elif roll < 0.5:
            down = [i for i in ids if not c.members[i].alive]
            if down:
                c.restart(rng.choice(down))
        elif roll < 0.65:
            rng.shuffle(ids)
            cut = rng.randrange(1, len(ids))
            c.heal()
            c.partition(ids[:cut], ids[cut:])
        elif roll < 0.72:
            a, b = rng.sample(ids, 2)
            c.net.cut.add((a, b))  # one-way loss
        elif roll < 0.8:
            leader = c.leader()
            if leader is not None:
                c.heal()
                c.isolate(leader)
        elif roll < 0.88:
            self._pause(ids)
        else:
            c.heal()

    def _pause(self, ids: list[int]) -> None:
        # Mostly the leader, whose lease is what a pause endangers; at a turn boundary, as a
        # process stands still between the driver's turns as far as the core can tell.
        c, rng = self.c, self.rng
        lead = c.leader()
        victim = lead if lead is not None and rng.random() < 0.7 else rng.choice(ids)
        m = c.members[victim]
        if not m.alive or m.phase != 0 or victim in self.paused:
            return
        length = rng.randint(4, 40) if rng.random() < 0.5 else rng.randint(60, 300)
        self.paused[victim] = (c.time, c.time + length)

    def _resume(self, i: int, since: int) -> None:
        """Tick as the driver does after a pause (``RaftNode.run``)."""
        core = self.c[i]
        missed = sum(
            1
            for t in range(since + 1, self.c.time + 1)
            if (t + self.phase_offset[i]) % TICK_EVERY == 0
        )
        ticks, lost = catch_up(missed)
        for _ in range(ticks):
            core.tick()
        if lost:
            core.forget_lease()

    def _conf_change(self) -> None:
        c, rng = self.c, self.rng
        lead = c.leader()
        if lead is None or lead in self.paused:
            return
        core = c[lead]
        universe = list(c.members)
        size = rng.randint(max(1, self.voters - 2), min(len(universe), self.voters + 2))
        voters = set(rng.sample(universe, size))
        if rng.random() < 0.3 and lead in voters and len(voters) > 1:
            voters.discard(lead)  # remove the leader
        rest = [i for i in universe if i not in voters]
        learners = {i for i in rest if rng.random() < 0.5}
        try:
            core.propose_conf_change(voters, learners)
            self.conf_changes += 1
        except RaftError:
            pass

    def _client(self) -> None:
        c, rng = self.c, self.rng
        alive = [
            m for m in c.members.values() if m.alive and m.phase == 0 and m.id not in self.paused
        ]
        if not alive:
            return
        lead = c.leader()
        if lead is not None and c.members[lead] in alive and rng.random() < 0.6:
            member = c.members[lead]
        else:
            member = rng.choice(alive)
        try:
            if rng.random() < 0.65:
                self.write_seq += 1
                c.propose(member.id, b"w%d" % self.write_seq)
            else:
                self.read_seq += 1
                c.read(member.id, b"r%d" % self.read_seq)
        except RaftError:
            pass

    # -- the loop -------------------------------------------------------------------------

    def _step(self, faults: bool) -> None:
        c, rng = self.c, self.rng
        c.time += 1
        for i, (since, until) in list(self.paused.items()):
            if not c.members[i].alive:
                del self.paused[i]
            elif c.time >= until:
                del self.paused[i]
                self._resume(i, since)
        for i, m in c.members.items():
            if (
                m.alive
                and i not in self.paused
                and (c.time + self.phase_offset[i]) % TICK_EVERY == 0
            ):
                m.pending_ticks += 1
        c.deliver_due()
        roll = rng.random()
        if faults:
            if roll < 0.02:
                self._random_fault()
            elif roll < 0.027:
                self._conf_change()
            elif roll < 0.033:
                lead = c.leader()
                if lead is not None and lead not in self.paused:
                    with contextlib.suppress(RaftError):
                        c[lead].transfer_leader(rng.choice(list(c.members)))
        if faults and roll > 0.7:
            self._client()
        for i, m in c.members.items():
            if i not in self.paused:
                m.run_phase()
        if c.time % 50 == 0:
            c.check_log_matching()

    def run(self) -> SimResult:
        c = self.c
        c.net.min_delay, c.net.max_delay = 1, 8
        c.net.drop_rate = 0.02
        c.net.dup_rate = 0.02
        for _ in range(self.steps):
            if self.rng.random() < 0.001:
                c.net.max_delay = 40  # a stretch of very slow links
            elif self.rng.random() < 0.002:
                c.net.max_delay = 8
            self._step(faults=True)
        self._settle()
        return SimResult(
            self.seed,
            self.voters,
            self.steps,
            len(c.acked),
            c.reads_checked,
            c.max_commit,
            len(c.leaders),
            self.conf_changes,
        )

    def _settle(self) -> None:
        """Stop the faults, bring everyone back, and demand convergence."""
        c = self.c
        c.heal()
        for i, (since, _) in list(self.paused.items()):
            del self.paused[i]
            if c.members[i].alive:
                self._resume(i, since)
        c.net.drop_rate = c.net.dup_rate = 0.0
        c.net.max_delay = 8
        for i, m in c.members.items():
            if not m.alive:
                c.restart(i)
        limit = 4000
        for _ in range(limit):
            self._step(faults=False)
            if self._converged():
                break
        else:
            raise InvariantViolation(f"no convergence {limit} steps after healing: {self._state()}")
        lead = c.leader()
        assert lead is not None
        for mid in c[lead].conf.members():
            writes = c.members[mid].sm.writes
            missing = [w for w in c.acked if w not in writes]
            if missing:
                raise InvariantViolation(
                    f"member {mid} lacks acknowledged writes {missing[:5]} ({len(missing)} in all)"
                )
        c.check_log_matching()

    def _converged(self) -> bool:
        c = self.c
        lead = c.leader()
        if lead is None:
            return False
        core = c[lead]
        if core.conf.joint or core.commit < core.last_index():
            return False
        if core.log.term(core.commit) != core.term:
            return False
        for mid in core.conf.members():
            m = c.members[mid]
            if m.core is None or m.sm.applied < core.commit or m.phase != 0:
                return False
        return True

    def _state(self) -> str:
        parts = []
        for i, m in self.c.members.items():
            core = m.core
            if core is None:
                parts.append(f"{i}:down")
            else:
                parts.append(
                    f"{i}:{core.role.value} t{core.term} lead={core.lead} "
                    f"last={core.last_index()} c={core.commit} a={core.applied} {core.conf}"
                )
        return "; ".join(parts)


def run_seed(seed: int, voters: int, steps: int) -> SimResult:
    try:
        return Simulation(seed, voters, steps).run()
    except (InvariantViolation, AssertionError, RaftError) as exc:
        raise InvariantViolation(
            f"seed {seed} with {voters} voters failed: {exc}\n"
            f"replay: {replay_command(seed, voters, steps)}"
        ) from exc


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--seed", type=int, help="run this one seed")
    p.add_argument("--seeds", type=int, default=100, help="run seeds 0..N-1")
    p.add_argument("--first-seed", type=int, default=0)
    p.add_argument("--voters", type=int, choices=[3, 5, 7], help="cluster size (default: all)")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--trace", action="store_true", help="print delivered messages")
    args = p.parse_args(argv)
    sizes = [args.voters] if args.voters else [3, 5, 7]
    seeds = (
        [args.seed]
        if args.seed is not None
        else range(args.first_seed, args.first_seed + args.seeds)
    )
    started = time.monotonic()
    totals = {"runs": 0, "writes": 0, "reads": 0, "elections": 0, "conf": 0}
    failures = 0
    for seed in seeds:
        for voters in sizes:
            sim = Simulation(seed, voters, args.steps)
            if args.trace:
                sim.c.trace = []
            try:
                r = sim.run()
            except (InvariantViolation, AssertionError, RaftError) as exc:
                failures += 1
                if sim.c.trace:
                    print("\n".join(sim.c.trace[-200:]))
                print(f"FAIL seed {seed} voters {voters}: {exc}")
                print(f"  replay: {replay_command(seed, voters, args.steps)}")
                continue
            totals["runs"] += 1
            totals["writes"] += r.writes_acked
            totals["reads"] += r.reads_checked
            totals["elections"] += r.elections
            totals["conf"] += r.conf_changes
    elapsed = time.monotonic() - started
    print(
        f"{totals['runs']} runs passed, {failures} failed in {elapsed:.1f}s: "
        f"{totals['writes']} acknowledged writes, {totals['reads']} linearizable reads, "
        f"{totals['elections']} terms with a leader, {totals['conf']} configuration changes"
    )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
