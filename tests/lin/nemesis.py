"""The nemesis: faults done to a real cluster in network namespaces while clients run.

Every fault is a function ``(nemesis) -> description`` that breaks something and registers
how to undo it; ``heal`` undoes everything (links restored, paused members continued, dead
members restarted). Faults can be combined: ``run_round`` picks one or two at random.

Faults: a random split into halves, the leader isolated, a bridge (two members that cannot
see each other, one that sees both), one-way loss, delay with jitter and loss (tc netem or
a user-space delay line), kill -9 and restart, SIGSTOP/SIGCONT for longer than the election
timeout, leadership transfer, and membership changes (a learner added, promoted, then a
voter removed — the leader half of the time; or 3 → 5 → 3 voters in one joint transition
each way), alone or during a partition.
"""

from __future__ import annotations

import random
import signal
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import grpc

from flotilla.node.api.etcdpb import flotilla_pb2, flotilla_pb2_grpc
from flotilla.node.api.etcdpb import rpc_pb2 as pb
from flotilla.node.api.etcdpb import rpc_pb2_grpc as rpc

from ..node.netns import NetnsCluster
from ..node.procs import Proc, free_ports, wait_for

ELECTION_TIMEOUT = 0.5  # the clusters here run with --election-timeout=500


def _call(endpoint: str, fn: Callable[[grpc.Channel], object], timeout: float = 3) -> object:
    with grpc.insecure_channel(endpoint) as ch:
        grpc.channel_ready_future(ch).result(timeout=timeout)
        return fn(ch)


def cluster_rpc(method: str, req: object) -> Callable[[str], object]:
    """A call of the etcd Cluster service, to try on one endpoint after another."""

    def call(endpoint: str) -> object:
        with grpc.insecure_channel(endpoint) as ch:
            return getattr(rpc.ClusterStub(ch), method)(req, timeout=3)

    return call


class Nemesis:
    def __init__(self, cluster: NetnsCluster, rng: random.Random, endpoints: list[str]) -> None:
        self.c = cluster
        self.rng = rng
        self.endpoints = endpoints  # shared with the workload: new members are added to it
        self.injected: Counter[str] = Counter()
        self._undo: list[Callable[[], None]] = []
        self.removed: list[Proc] = []
        self._ids: dict[str, int] = {}
        self.crashes: list[str] = []

    # -- cluster views ---------------------------------------------------------------------

    def running(self) -> list[Proc]:
        return [m for m in self.c.members if m.alive]

    def voters(self) -> list[Proc]:
        ids = self.member_ids()
        listed = self._member_list()
        voter_ids = {m.ID for m in listed if not m.isLearner}
        return [m for m in self.running() if ids.get(m.name) in voter_ids]

    def _member_list(self) -> list[pb.Member]:
        for m in self.running():
            try:
                resp = _call(
                    m.endpoint,
                    lambda ch: rpc.ClusterStub(ch).MemberList(pb.MemberListRequest(), timeout=3),
                )
                return list(resp.members)  # type: ignore[attr-defined]
            except grpc.RpcError:
                continue
            except grpc.FutureTimeoutError:
                continue
        return []

    def member_ids(self) -> dict[str, int]:
        out = {m.name: self._ids[m.name] for m in self.c.members if m.name in self._ids}
        for m in self.c.members:
            if m.alive:
                try:
                    resp = _call(
                        m.endpoint,
                        lambda ch: rpc.MaintenanceStub(ch).Status(pb.StatusRequest(), timeout=2),
                    )
                    out[m.name] = resp.header.member_id  # type: ignore[attr-defined]
                except (grpc.RpcError, grpc.FutureTimeoutError):
                    continue
        return out

    def leader(self) -> Proc | None:
        return self.c.leader(self.running())

    # -- faults ----------------------------------------------------------------------------

    def halves(self) -> str:
        members = self.running()
        self.rng.shuffle(members)
        cut = self.rng.randint(1, len(members) // 2)
        a, b = members[:cut], members[cut:]
        self.c.partition(a, b)
        return f"partition {[m.name for m in a]} | {[m.name for m in b]}"

    def isolate_leader(self) -> str:
        lead = self.leader()
        if lead is None:
            return self.halves()
        self.c.isolate(lead.name)
        return f"isolate leader {lead.name}"

    def bridge(self) -> str:
        members = self.running()
        self.rng.shuffle(members)
        mid = members[0]
        rest = members[1:]
        left, right = rest[: len(rest) // 2], rest[len(rest) // 2 :]
        self.c.partition(left, right)
        return f"bridge {mid.name} between {[m.name for m in left]} and {[m.name for m in right]}"

    def one_way(self) -> str:
        lead = self.leader() or self.rng.choice(self.running())
        other = self.rng.choice([m for m in self.running() if m is not lead] or [lead])
        frm, to = (lead, other) if self.rng.random() < 0.5 else (other, lead)
        self.c.drop_one_way(frm, to)
        return f"one-way loss {frm.name} -> {to.name}"

    def netem(self) -> str:
        m = self.rng.choice(self.running())
        delay = self.rng.choice([20, 50, 100])
        loss = self.rng.choice([0, 5, 20])
        how = self.c.netem(m, delay, delay // 2, loss)
        done = f"{how}: {m.name} delay {delay}ms ±{delay // 2}ms loss {loss}%"
        if how != "netem" and self.rng.random() < 0.3:
            # A thin link too (tbf takes netem's place as root qdisc, so not with netem):
            # big appends and snapshot chunks queue behind each other.
            self.c.slow_link(m)
            done += ", link throttled"
        return done

    def kill(self) -> str:
        m = self.leader() if self.rng.random() < 0.5 else self.rng.choice(self.running())
        m = m or self.rng.choice(self.running())
        self.c.kill(m)
        self._undo.append(lambda: self._restart(m))
        return f"kill -9 {m.name}"

    def pause(self) -> str:
        m = self.leader() if self.rng.random() < 0.5 else self.rng.choice(self.running())
        m = m or self.rng.choice(self.running())
        assert m.popen is not None
        m.popen.send_signal(signal.SIGSTOP)
        pid = m.popen

        def resume() -> None:
            if pid.poll() is None:
                pid.send_signal(signal.SIGCONT)

        self._undo.append(resume)
        return f"SIGSTOP {m.name}"

    def transfer(self) -> str:
        lead = self.leader()
        ids = self.member_ids()
        targets = [m for m in self.voters() if m is not lead and m.name in ids]
        if lead is None or not targets:
            return "transfer skipped (no leader)"
        target = self.rng.choice(targets)
        try:
            _call(
                lead.endpoint,
                lambda ch: rpc.MaintenanceStub(ch).MoveLeader(
                    pb.MoveLeaderRequest(targetID=ids[target.name]), timeout=3
                ),
            )
            return f"transfer leadership {lead.name} -> {target.name}"
        except (grpc.RpcError, grpc.FutureTimeoutError) as err:
            return f"transfer {lead.name} -> {target.name} refused ({_code(err)})"

    def roll_member(self) -> str:
        """Add a learner, promote it, remove a voter (the leader half of the time)."""
        new = self._join()
        if new is None:
            return "add learner refused"
        new_id = self.member_ids().get(new.name)
        promoted = (
            new_id is not None
            and self._retry(
                cluster_rpc("MemberPromote", pb.MemberPromoteRequest(ID=new_id)), timeout=15
            )
            is not None
        )
        if not promoted:
            return f"added learner {new.name}, promotion refused; " + self._remove(new)
        voters = self._voter_names()
        if len(voters) <= 3:
            return f"added and promoted {new.name}"
        lead = self.leader()
        victims = [m for m in self.c.members if m.name in voters.values() and m is not new]
        victim = lead if lead in victims and self.rng.random() < 0.5 else None
        victim = victim or (self.rng.choice(victims) if victims else None)
        if victim is None:
            return f"added and promoted {new.name}; no voter to remove"
        return f"added and promoted {new.name}; " + self._remove(victim)

    def grow_and_shrink(self) -> str:
        """3 -> 5 -> 3 voters through learners, one joint transition each way."""
        joined = [j for j in (self._join(), self._join()) if j is not None]
        ids = self.member_ids()
        grow = set(self._voter_names()) | {ids[j.name] for j in joined if j.name in ids}
        if not self._set_voters(grow):
            undo = "; ".join(self._remove(j) for j in joined)
            return f"added learners {[j.name for j in joined]}, growing refused; {undo}"
        # Always back to three voters, whatever an earlier refused step left.
        keep = set(self.rng.sample(sorted(grow), min(3, len(grow))))
        # Names before the shrink (the list loses the removed); a member that has not
        # published its name yet is known by the id its own Status reports.
        names = {mid: name for mid, name in self._all_names().items() if name}
        names.update({mid: name for name, mid in ids.items()})
        if not self._set_voters(keep):
            return f"grew to {len(grow)} voters, shrinking refused"
        kept = {names.get(mid, "?") for mid in keep}
        for m in list(self.c.members):
            if m.name not in kept:
                self._await_exit(m)
        return f"{len(grow) - len(joined)} -> {len(grow)} -> {len(keep)}, keeping {sorted(kept)}"

    def _voter_names(self) -> dict[int, str]:
        return {m.ID: m.name for m in self._member_list() if not m.isLearner}

    def _all_names(self) -> dict[int, str]:
        return {m.ID: m.name for m in self._member_list()}

    # -- helpers ---------------------------------------------------------------------------

    def _retry(self, fn: Callable[[str], object], timeout: float = 10) -> Any:
        """``fn`` on one running member after another until it answers; None if none did."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for m in self.running():
                try:
                    return fn(m.endpoint)
                except grpc.RpcError:
                    continue
            time.sleep(0.2)
        return None

    def _join(self) -> Proc | None:
        number = self.c.new_member_number()
        name = f"m{number}"
        client, peer, metrics = free_ports(3)
        m = Proc(name, client, peer, metrics, self.c.root / name, self.c.root / f"{name}.log")
        self.c.members.append(m)
        # Addresses follow the member number, never reused: members come and go.
        self.c.setup_member(m, number - 1)
        added = self._retry(
            cluster_rpc("MemberAdd", pb.MemberAddRequest(peerURLs=[m.peer_url], isLearner=True))
        )
        if added is None:
            self.c.members.remove(m)
            return None
        self._ids[m.name] = added.member.ID  # known before the new member even starts
        m.initial_state = "existing"
        self.c.start(m)
        self.endpoints.append(m.endpoint)
        return m

    def _set_voters(self, voters: set[int]) -> bool:
        def call(_: str) -> object:
            lead = self.leader()
            if lead is None:
                raise grpc.RpcError()
            with grpc.insecure_channel(lead.endpoint) as ch:
                stub = flotilla_pb2_grpc.MembershipStub(ch)
                req = flotilla_pb2.SetVotersRequest(voters=sorted(voters))
                phases = [p.phase for p in stub.SetVoters(req, timeout=10)]
            if phases[-1:] != ["done"]:
                raise grpc.RpcError()
            return phases

        return self._retry(call, timeout=20) is not None

    def _remove(self, victim: Proc) -> str:
        vid = self.member_ids().get(victim.name)
        if vid is None:
            return f"remove {victim.name} skipped (unreachable)"
        ok = self._retry(cluster_rpc("MemberRemove", pb.MemberRemoveRequest(ID=vid)))
        if ok is None:
            return f"remove {victim.name} refused"
        self._await_exit(victim)
        return f"removed {victim.name}"

    def _await_exit(self, m: Proc) -> None:
        """A removed member stops by itself; it must not be restarted."""
        assert m.popen is not None
        try:
            m.popen.wait(timeout=15)
        except Exception:  # a paused or stuck one: it is out of the cluster anyway
            m.popen.kill()
            m.popen.wait()
        if m.endpoint in self.endpoints:
            self.endpoints.remove(m.endpoint)
        self.c.members.remove(m)
        self.removed.append(m)

    def _restart(self, m: Proc) -> None:
        if not m.alive and m in self.c.members:
            m.env = {}
            self.c.start(m)

    # -- rounds ----------------------------------------------------------------------------

    def heal(self) -> None:
        self.c.heal()
        undo, self._undo = self._undo, []
        for fn in reversed(undo):
            fn()
        # Every member still in the cluster must be running now: one that exited by itself
        # crashed (a removed member leaves self.c.members before it stops).
        for m in self.c.members:
            if m.popen is not None and not m.alive:
                tail = m.log_path.read_text(errors="replace").splitlines()[-3:]
                self.crashes.append(
                    f"{m.name} exited by itself with status {m.popen.returncode}: "
                    + " | ".join(tail)
                )
                self.c.start(m)

    def run_round(self, names: list[str], hold: float) -> list[str]:
        """Inject one or two faults, hold them ``hold`` seconds, heal. Returns what it did."""
        chosen = [self.rng.choice(names)]
        if self.rng.random() < 0.4:
            chosen.append(self.rng.choice(names))
        done = []
        # Membership changes run after the network faults of the round, i.e. under them.
        chosen.sort(key=lambda n: n in ("roll_member", "grow_and_shrink"))
        for name in chosen:
            done.append(getattr(self, name)())
            self.injected[name] += 1
        time.sleep(hold)  # the fault itself: the clients run against it meanwhile
        self.heal()
        return done

    def settle(self, timeout: float = 40) -> None:
        """Wait until every member runs, one leader is known, and all applied the same."""
        wait_for("a leader after healing", self.leader, timeout)

        revs: dict[str, int] = {}

        def converged() -> bool:
            for m in self.running():
                resp = _call(
                    m.endpoint,
                    lambda ch: rpc.KVStub(ch).Range(
                        pb.RangeRequest(key=b"lin/", serializable=True), timeout=2
                    ),
                )
                revs[m.name] = resp.header.revision  # type: ignore[attr-defined]
            return len(set(revs.values())) == 1

        try:
            wait_for("every member to apply the same revision", converged, timeout)
        except AssertionError as exc:
            raise AssertionError(f"{exc} (revisions last seen: {revs})") from None

    def hashes(self) -> dict[str, int]:
        """HashKV of every running member at one revision (they must agree)."""
        rev = min(
            _call(
                m.endpoint,
                lambda ch: rpc.KVStub(ch).Range(
                    pb.RangeRequest(key=b"lin/", serializable=True), timeout=2
                ),
            ).header.revision  # type: ignore[attr-defined]
            for m in self.running()
        )
        return {
            m.name: _call(
                m.endpoint,
                lambda ch: rpc.MaintenanceStub(ch).HashKV(
                    pb.HashKVRequest(revision=rev), timeout=5
                ),
            ).hash  # type: ignore[attr-defined]
            for m in self.running()
        }


NETWORK = ["halves", "isolate_leader", "bridge", "one_way", "netem"]
PROCESS = ["kill", "pause", "transfer"]
MEMBERSHIP = ["roll_member", "grow_and_shrink"]
ALL = NETWORK + PROCESS + MEMBERSHIP


def _code(err: BaseException) -> str:
    code = getattr(err, "code", None)
    return str(code()) if callable(code) else type(err).__name__
