"""Members in their own network namespaces, so tests can cut real links between them.

Each member gets a namespace with one veth into a bridge on the host; the host (the test)
reaches every member through the bridge. A partition is a set of nftables rules inside the
members' namespaces that drop traffic to and from the other side, while the host's own
traffic still passes, so the test can keep asking an isolated member questions.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from .procs import FAILED, Proc, ProcessCluster

_subnets = itertools.count(os.getpid() % 200 + 20)


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, check=check, capture_output=True, text=True)


def netns_available() -> bool:
    probe = f"flt-probe-{os.getpid()}"
    ok = sh("ip", "netns", "add", probe, check=False).returncode == 0
    if ok:
        sh("ip", "netns", "del", probe, check=False)
    return ok and sh("nft", "--version", check=False).returncode == 0


class NetnsCluster(ProcessCluster):
    """A ProcessCluster whose members live at 10.213.<n>.<10+i> in namespaces."""

    def setup_network(self) -> None:
        # The first subnet whose bridge is free: another run (a soak, say) may hold some.
        for _ in range(200):
            self.subnet = next(_subnets) % 200 + 20
            self.bridge = f"fltbr{self.subnet}"
            if sh("ip", "link", "add", self.bridge, "type", "bridge", check=False).returncode == 0:
                break
        else:
            raise RuntimeError("no free subnet for a test bridge (10.213.20-219.0/24)")
        self.host_ip = f"10.213.{self.subnet}.1"
        sh("ip", "addr", "add", f"{self.host_ip}/24", "dev", self.bridge)
        sh("ip", "link", "set", self.bridge, "up")
        for i, m in enumerate(self.members):
            self.setup_member(m, i)

    def setup_member(self, m: Proc, i: int) -> None:
        """Give ``m`` a namespace at address .<10+i> (also for members added later)."""
        ns = f"flt{self.subnet}-{m.name}"
        ip = f"10.213.{self.subnet}.{10 + i}"
        self.namespaces = [*getattr(self, "namespaces", []), ns]
        outer, inner = f"fv{self.subnet}{m.name}", f"fi{self.subnet}{m.name}"
        sh("ip", "netns", "add", ns)
        sh("ip", "link", "add", outer, "type", "veth", "peer", "name", inner)
        sh("ip", "link", "set", inner, "netns", ns)
        sh("ip", "link", "set", outer, "master", self.bridge)
        sh("ip", "link", "set", outer, "up")
        sh("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", inner)
        sh("ip", "-n", ns, "link", "set", inner, "up")
        sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "netns", "exec", ns, "nft", "add", "table", "inet", "flt")
        for chain, hook in (("in", "input"), ("out", "output")):
            spec = f"{{ type filter hook {hook} priority 0 ; }}"
            sh("ip", "netns", "exec", ns, "nft", "add", "chain", "inet", "flt", chain, spec)
        m.host, m.netns = ip, ns
        m.data_dir = Path(str(m.data_dir))

    def new_member_number(self) -> int:
        """A member number never used in this cluster before (members come and go)."""
        self.numbers_used = max(getattr(self, "numbers_used", 0), len(self.members)) + 1
        return self.numbers_used

    def interface(self, m: Proc) -> str:
        return f"fi{self.subnet}{m.name}"

    def partition(self, *sides: list[Proc]) -> None:
        """Cut every link between members on different sides (both directions)."""
        for i, a_side in enumerate(sides):
            for b_side in sides[i + 1 :]:
                for a in a_side:
                    for b in b_side:
                        self._drop(a.netns, b.host)
                        self._drop(b.netns, a.host)

    def drop_one_way(self, frm: Proc, to: Proc) -> None:
        """Lose every packet from ``frm`` to ``to``; the other direction still works."""
        assert to.netns is not None
        sh("ip", "netns", "exec", to.netns, "nft", "add", "rule", "inet", "flt", "in",
           "ip", "saddr", frm.host, "drop")  # fmt: skip

    def netem(self, m: Proc, delay_ms: int, jitter_ms: int = 0, loss: int = 0) -> str:
        """Delay (plus a random jitter) and drop ``loss``% of everything ``m`` sends.

        With tc netem where the kernel has it; otherwise with a delay line (``delayline``)
        fed by an iptables NFQUEUE rule, which does the same in user space. Returns which.
        """
        assert m.netns is not None
        dev = self.interface(m)
        spec = ["delay", f"{delay_ms}ms", f"{jitter_ms}ms", "loss", f"{loss}%"]
        cmd = ("ip", "netns", "exec", m.netns, "tc", "qdisc", "replace", "dev", dev, "root")
        if sh(*cmd, "netem", *spec, check=False).returncode == 0:
            return "netem"
        lines: dict[str, subprocess.Popen[str]] = getattr(self, "delay_lines", {})
        old = lines.pop(m.netns, None)
        if old is not None:
            # Replaced, as tc replaces a qdisc: one line per namespace can hold its queue.
            old.kill()
            old.wait()
            sh("ip", "netns", "exec", m.netns, "iptables", "-F", "OUTPUT")
        line = subprocess.Popen(
            ["ip", "netns", "exec", m.netns, sys.executable, "-m", "tests.node.delayline",
             "--queue", "1", "--delay-ms", str(delay_ms), "--jitter-ms", str(jitter_ms),
             "--loss", str(loss)],
            stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[2],
        )  # fmt: skip
        assert line.stdout is not None
        if line.stdout.readline().strip() != "ready":
            line.kill()
            raise RuntimeError(f"the delay line in {m.netns} did not start (exit {line.wait()})")
        self.delay_lines = {**lines, m.netns: line}
        # Queued only while the line is there to answer: a gone line lets packets pass.
        sh("ip", "netns", "exec", m.netns, "iptables", "-A", "OUTPUT", "-o", dev, "-j",
           "NFQUEUE", "--queue-num", "1", "--queue-bypass")  # fmt: skip
        return "delay line"

    def slow_link(self, m: Proc, rate: str = "512kbit") -> None:
        """Throttle ``m``'s outgoing link with a token bucket (queueing delay under load)."""
        assert m.netns is not None
        sh("ip", "netns", "exec", m.netns, "tc", "qdisc", "replace", "dev", self.interface(m),
           "root", "tbf", "rate", rate, "burst", "16kbit", "latency", "300ms")  # fmt: skip

    def isolate(self, *names: str) -> None:
        """Cut the named members off from all others (both directions); the host still talks."""
        cut = [m for m in self.members if m.name in names]
        rest = [m for m in self.members if m.name not in names]
        for a in cut:
            for b in rest:
                self._drop(a.netns, b.host)
                self._drop(b.netns, a.host)

    def _drop(self, ns: str | None, peer_ip: str) -> None:
        assert ns is not None
        sh(
            "ip",
            "netns",
            "exec",
            ns,
            "nft",
            "add",
            "rule",
            "inet",
            "flt",
            "in",
            "ip",
            "saddr",
            peer_ip,
            "drop",
        )
        sh(
            "ip",
            "netns",
            "exec",
            ns,
            "nft",
            "add",
            "rule",
            "inet",
            "flt",
            "out",
            "ip",
            "daddr",
            peer_ip,
            "drop",
        )

    def heal(self) -> None:
        """Remove every partition, every netem shaping and every delay line."""
        self._stop_delay_lines()
        for m in self.members:
            if m.netns is None:
                continue
            if getattr(self, "delay_lines", None) is not None:
                sh("ip", "netns", "exec", m.netns, "iptables", "-F", "OUTPUT", check=False)
            sh("ip", "netns", "exec", m.netns, "tc", "qdisc", "del", "dev", self.interface(m),
               "root", check=False)  # fmt: skip
            for chain in ("in", "out"):
                sh(
                    "ip",
                    "netns",
                    "exec",
                    str(m.netns),
                    "nft",
                    "flush",
                    "chain",
                    "inet",
                    "flt",
                    chain,
                )

    def _stop_delay_lines(self) -> None:
        for line in getattr(self, "delay_lines", {}).values():
            line.kill()
            line.wait()
        if hasattr(self, "delay_lines"):
            self.delay_lines = {}

    def teardown_network(self) -> None:
        self._stop_delay_lines()
        for ns in getattr(self, "namespaces", []):  # also of members removed meanwhile
            sh("ip", "netns", "del", ns, check=False)
        sh("ip", "link", "del", self.bridge, check=False)


def running(c: NetnsCluster, request: pytest.FixtureRequest) -> Iterator[NetnsCluster]:
    """Set up ``c``'s network, start it healthy, yield it; its logs if the start or the test
    failed, and everything stopped and torn down afterwards (the body of a test fixture)."""
    c.setup_network()
    try:
        c.start()
        c.wait_healthy()
        yield c
        if request.node.stash.get(FAILED, True):
            print(c.logs())
    except BaseException:
        print(c.logs())
        raise
    finally:
        c.stop()
        c.teardown_network()
