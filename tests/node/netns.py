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
from pathlib import Path

from .procs import ProcessCluster

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
        self.subnet = next(_subnets)
        self.bridge = f"fltbr{self.subnet}"
        self.host_ip = f"10.213.{self.subnet}.1"
        sh("ip", "link", "add", self.bridge, "type", "bridge")
        sh("ip", "addr", "add", f"{self.host_ip}/24", "dev", self.bridge)
        sh("ip", "link", "set", self.bridge, "up")
        for i, m in enumerate(self.members):
            ns = f"flt{self.subnet}-{m.name}"
            ip = f"10.213.{self.subnet}.{10 + i}"
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
        for m in self.members:
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

    def teardown_network(self) -> None:
        for m in self.members:
            if m.netns:
                sh("ip", "netns", "del", m.netns, check=False)
        sh("ip", "link", "del", self.bridge, check=False)
