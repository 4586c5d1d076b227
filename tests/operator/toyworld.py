"""A toy Kubernetes-plus-Raft world that carries out the planner's steps.

Only for exploring many orders of events quickly: the StatefulSet controller creates missing
pods and claims, a pod whose claim holds its member's data (or a fresh claim for a member
that never ran) starts and catches up at once, and an election follows the Raft rule of a
healthy majority. Every step is checked against the safety rules as it is applied; the real
thing is proven against a real API server and real members elsewhere.
"""

from __future__ import annotations

import argparse
import random
import sys
from dataclasses import dataclass, field

from flotilla.operator import plan as p
from flotilla.operator.model import Cluster, Member, Observed, Pod, Pvc, Spec, StatefulSet


class Unsafe(AssertionError):
    """A step broke a safety rule of DESIGN.md."""


@dataclass
class ToyPod:
    config_hash: str
    version: str
    created_at: float
    ready: bool = False
    deleting: bool = False


@dataclass
class ToyPvc:
    member_id: int | None = None
    deleting: bool = False
    data_of: int | None = None  # whose Raft data is really on it (the truth, not the label)


@dataclass
class ToyMember:
    ordinal: int
    learner: bool
    healthy: bool = False
    ever_ran: bool = False


@dataclass
class ToyWorld:
    now: float = 1_000_000.0
    sts: StatefulSet | None = None
    pods: dict[int, ToyPod] = field(default_factory=dict)
    pvcs: dict[int, ToyPvc] = field(default_factory=dict)
    members: dict[int, ToyMember] = field(default_factory=dict)
    leader: int | None = None
    next_id: int = 0x100
    version_of_hash: dict[str, str] = field(default_factory=dict)
    steps: list[p.Step] = field(default_factory=list)

    # --- what the operator sees ---------------------------------------------------------

    def observe(self) -> Observed:
        missing = frozenset() if self.sts else frozenset({"peer-service", "client-service", "pdb"})
        cluster = None
        if any(m.healthy for m in self.members.values()):
            cluster = Cluster(
                tuple(
                    Member(i, m.ordinal, f"db-{m.ordinal}", m.learner, m.healthy, 0, 100)
                    for i, m in sorted(self.members.items())
                ),
                self.leader,
            )
        return Observed(
            now=self.now,
            statefulset=self.sts,
            missing=missing,
            pods=tuple(
                Pod(k, "Running", t.ready, t.version, t.config_hash, t.created_at, t.deleting)
                for k, t in sorted(self.pods.items())
            ),
            pvcs=tuple(Pvc(k, c.member_id, c.deleting) for k, c in sorted(self.pvcs.items())),
            cluster=cluster,
        )

    # --- the operator's actions ---------------------------------------------------------

    def voters(self) -> set[int]:
        return {i for i, m in self.members.items() if not m.learner}

    def healthy_majority(self, voters: set[int]) -> bool:
        healthy = sum(1 for i in voters if self.members[i].healthy)
        return healthy >= len(voters) // 2 + 1

    def apply(self, step: p.Step, spec: Spec) -> None:
        self.steps.append(step)
        self.version_of_hash[spec.config_hash] = spec.version
        match step:
            case p.CreateResources(replicas=n, initial_cluster_state=state):
                if self.sts is None:
                    self.sts = StatefulSet(n, spec.config_hash, state)
                    if state == "new":
                        for k in range(n):
                            self._new_member(k, learner=False)
            case p.UpdateTemplate(config_hash=h, initial_cluster_state=state):
                assert self.sts is not None
                self.sts = StatefulSet(self.sts.replicas, h, state)
            case p.BindPvc(ordinal=k, member_id=i):
                if self.pvcs[k].data_of != i:
                    raise Unsafe(f"claim {k} bound to {i:x} but holds {self.pvcs[k].data_of}")
                self.pvcs[k].member_id = i
            case p.AddLearner(ordinal=k):
                self._new_member(k, learner=True)
            case p.Reconfigure(voters=voters):
                old, new = self.voters(), set(voters)
                if not (self.healthy_majority(old) and self.healthy_majority(new)):
                    raise Unsafe(f"reconfiguration {old} -> {new} without healthy majorities")
                if self.leader not in new and old & new:
                    raise Unsafe("the leader was not moved off before leaving")
                for i in list(self.members):
                    if i not in new:
                        del self.members[i]
                    else:
                        self.members[i].learner = False
                if self.leader not in new:  # the Raft core hands over once C_new commits
                    self.leader = min(i for i in new if self.members[i].healthy)
            case p.TransferLeadership(to=i):
                m = self.members[i]
                if m.learner or not m.healthy:
                    raise Unsafe(f"leadership to {i:x}, which cannot lead")
                self.leader = i
            case p.RemoveMembers(ids=ids):
                for i in ids:
                    if i == self.leader:
                        raise Unsafe("removed the leader")
                    if not self.members[i].learner:
                        raise Unsafe("a voter removed without a joint reconfiguration")
                    del self.members[i]
            case p.ScaleStatefulSet(replicas=n):
                assert self.sts is not None
                beyond = [m for m in self.members.values() if m.ordinal >= n]
                if beyond:
                    raise Unsafe("the StatefulSet shrank under a member")
                self.sts = StatefulSet(n, self.sts.config_hash, self.sts.initial_cluster_state)
            case p.DeletePvcs(ordinals=ks):
                for k in ks:
                    self.pvcs[k].deleting = True
            case p.DeletePod(ordinal=k):
                self._check_pod_delete(k)
                self.pods[k].deleting = True
            case p.ReplaceMember(ordinal=k, member_id=i, wipe=wipe):
                voters = self.voters() - {i}
                if i in self.voters() and not self.healthy_majority(voters):
                    raise Unsafe("replacement without a healthy majority")
                del self.members[i]
                if wipe and k in self.pvcs:
                    self.pvcs[k].deleting = True
            case p.ReportQuorumLost() | p.WaitFor() | p.Done() | p.RolloutHalted():
                pass
            case _:
                raise AssertionError(f"unknown step {step}")

    def _check_pod_delete(self, k: int) -> None:
        target = next((i for i, m in self.members.items() if m.ordinal == k), None)
        others = [i for i in self.voters() if i != target]
        if target == self.leader and others:
            raise Unsafe("deleted the leader's pod while it could hand over")
        sick = [i for i in others if not self.members[i].healthy]
        if target in self.voters() and sick:
            raise Unsafe(f"touched a voter while {sick} is unhealthy")

    def _new_member(self, k: int, learner: bool) -> None:
        self.next_id += 1
        self.members[self.next_id] = ToyMember(k, learner)

    # --- the world moves on -------------------------------------------------------------

    def tick(self, dt: float = 5.0) -> None:
        self.now += dt
        for k in [k for k, t in self.pods.items() if t.deleting]:
            del self.pods[k]
        for k in [k for k, c in self.pvcs.items() if c.deleting and k not in self.pods]:
            del self.pvcs[k]
        if self.sts is not None:
            for k in [k for k in self.pods if k >= self.sts.replicas]:
                del self.pods[k]
            for k in range(self.sts.replicas):
                if k in self.pvcs and self.pvcs[k].deleting:
                    continue  # the controller waits for the old claim
                self.pvcs.setdefault(k, ToyPvc())
                if k not in self.pods:
                    version = self.version_of_hash.get(self.sts.config_hash, "?")
                    self.pods[k] = ToyPod(self.sts.config_hash, version, self.now)
        for i, m in self.members.items():
            m.healthy = self._runs(i, m)
            if m.healthy:
                m.ever_ran = True
                self.pvcs[m.ordinal].data_of = i
        for k, t in self.pods.items():
            t.ready = any(m.healthy and m.ordinal == k for m in self.members.values())
        self._elect()

    def _runs(self, i: int, m: ToyMember) -> bool:
        pod, pvc = self.pods.get(m.ordinal), self.pvcs.get(m.ordinal)
        if pod is None or pod.deleting or pvc is None or pod.version == "broken":
            return False
        if pvc.data_of is None:
            # Fresh data: only a member that never ran may start on it (no old identity).
            return not m.ever_ran
        return pvc.data_of == i

    def _elect(self) -> None:
        voters = self.voters()
        if self.leader in voters and self.members[self.leader].healthy:
            return
        if voters and self.healthy_majority(voters):
            self.leader = min(i for i in voters if self.members[i].healthy)
        else:
            self.leader = None

    # --- faults -------------------------------------------------------------------------

    def lose_claim(self, k: int) -> None:
        """The claim and the pod of ordinal ``k`` vanish (a node and its disk are gone)."""
        self.pvcs.pop(k, None)
        self.pods.pop(k, None)

    def restart_pod(self, k: int) -> None:
        """The pod restarts on its data (e.g. its node rebooted)."""
        if k in self.pods:
            self.pods[k].deleting = True


def run(world: ToyWorld, spec: Spec, passes: int = 300) -> p.Step:
    """Observe, plan, act, let the world move, until the planner says Done on a healthy world.

    Done with a member down is a wait too (the operator's timer comes back): a repair may
    need a grace period to pass first.
    """
    step: p.Step = p.WaitFor("start")
    for _ in range(passes):
        step = p.plan(spec, world.observe())
        healthy = all(m.healthy for m in world.members.values())
        if isinstance(step, p.Done) and healthy:
            return step
        world.apply(step, spec)
        world.tick()
    return step


def want(replicas: int = 3, version: str = "1.0", retention: str = "Retain") -> Spec:
    """A spec for cluster ``db``; each version has its own configuration digest."""
    return Spec(
        name="db",
        namespace="ns",
        replicas=replicas,
        version=version,
        pvc_retention=retention,
        config_hash=f"hash-of-{version}",
    )


def assert_converged(world: ToyWorld, spec: Spec) -> None:
    """Exactly the spec's voters on pods 0..n-1, all healthy, each on its own bound claim."""
    assert world.sts is not None and world.sts.replicas == spec.replicas
    by_ordinal = {m.ordinal: i for i, m in world.members.items()}
    assert sorted(by_ordinal) == list(range(spec.replicas))
    assert all(not m.learner and m.healthy for m in world.members.values())
    assert world.leader in world.members
    assert sorted(world.pods) == list(range(spec.replicas))
    assert all(t.ready and t.config_hash == spec.config_hash for t in world.pods.values())
    for k in range(spec.replicas):
        assert world.pvcs[k].member_id == by_ordinal[k] == world.pvcs[k].data_of


def chaos(seed: int, passes: int = 250, lost_disks: int = 1, restarts: float = 0.03) -> None:
    """Random spec changes, pod restarts and lost disks, then calm: safe, then converged."""
    rng = random.Random(seed)
    world = ToyWorld()
    spec = want(rng.choice([1, 3, 5]))
    for _ in range(passes):
        if rng.random() < 0.05:
            spec = want(
                rng.randint(1, 7),
                rng.choice(["1.0", "1.1", "1.2"]),
                rng.choice(["Retain", "Delete"]),
            )
        if rng.random() < restarts and world.pods:
            world.restart_pod(rng.choice(sorted(world.pods)))
        voters = world.voters()
        healthy = all(world.members[i].healthy for i in voters)
        if lost_disks and len(voters) >= 3 and healthy and rng.random() < 0.02:
            world.lose_claim(world.members[rng.choice(sorted(voters))].ordinal)
            lost_disks -= 1
        world.apply(p.plan(spec, world.observe()), spec)
        world.tick()
    step = run(world, spec, passes=1000)
    assert isinstance(step, p.Done), world.steps[-5:]
    assert_converged(world, spec)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Drive the planner through random chaos.")
    parser.add_argument("--seed", type=int, help="replay one seed")
    parser.add_argument("--seeds", type=int, default=1000)
    parser.add_argument("--passes", type=int, default=400)
    parser.add_argument("--lost-disks", type=int, default=3)
    parser.add_argument("--restarts", type=float, default=0.1)
    args = parser.parse_args(argv)
    seeds = [args.seed] if args.seed is not None else range(args.seeds)
    for seed in seeds:
        try:
            chaos(seed, args.passes, args.lost_disks, args.restarts)
        except AssertionError as e:
            print(f"seed {seed} failed: {e!r}"[:2000])
            print(
                f"replay: python -m tests.operator.toyworld --seed {seed} --passes {args.passes}"
                f" --lost-disks {args.lost_disks} --restarts {args.restarts}"
            )
            return 1
    print(f"{len(seeds)} seeds: safe and converged")
    return 0


if __name__ == "__main__":
    sys.exit(main())
