"""Pod networking: one Linux bridge on the host, one network namespace per pod.

Each pod namespace gets a veth pair whose host end joins the bridge, so pods reach
each other over plain L2 and the host (which owns the bridge address) reaches every
pod. Names resolve through ``/etc/netns/<ns>/hosts``, which ``ip netns exec``
bind-mounts over ``/etc/hosts`` for every process started in that namespace.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

from .config import Config

NETNS_ETC = Path("/etc/netns")
NETNS_RUN = Path("/run/netns")


def ip(
    *args: str, netns: str | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run ``ip ARGS`` (inside ``netns`` if given)."""
    argv = ["ip", *args] if netns is None else ["ip", "-n", netns, *args]
    return subprocess.run(argv, check=check, capture_output=True, text=True)


def ensure_bridge(cfg: Config) -> None:
    """Create the pod bridge with the gateway address, if missing."""
    if ip("link", "show", cfg.bridge, check=False).returncode != 0:
        ip("link", "add", cfg.bridge, "type", "bridge")
        ip("addr", "add", f"{cfg.bridge_ip}/{cfg.pod_prefix_len}", "dev", cfg.bridge)
    ip("link", "set", cfg.bridge, "up")


def delete_bridge(cfg: Config) -> None:
    ip("link", "del", cfg.bridge, check=False)


def netns_name(cfg: Config, pod_uid: str) -> str:
    return cfg.netns_prefix + pod_uid[:13]


def _veth_name(ns: str) -> str:
    # Interface names are limited to 15 characters.
    return "flv" + hashlib.sha1(ns.encode()).hexdigest()[:10]


def create_pod_netns(cfg: Config, ns: str, pod_ip: str, hostname: str, fqdn: list[str]) -> None:
    """Namespace with loopback, eth0 at ``pod_ip`` and a default route via the bridge."""
    delete_pod_netns(ns)
    etc = NETNS_ETC / ns
    etc.mkdir(parents=True, exist_ok=True)
    write_in_place(etc / "hosts", hosts_header(pod_ip, hostname, fqdn))
    write_in_place(etc / "hostname", hostname + "\n")
    # Names live in the hosts file; there is no DNS server. Point the resolver at the
    # pod's own loopback so a miss fails at once instead of timing out on the host's.
    write_in_place(etc / "resolv.conf", "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n")
    ip("netns", "add", ns)
    host_end, pod_end = _veth_name(ns), _veth_name(ns)[:-1] + "p"
    ip("link", "add", host_end, "type", "veth", "peer", "name", pod_end)
    ip("link", "set", pod_end, "netns", ns)
    ip("link", "set", host_end, "master", cfg.bridge)
    ip("link", "set", host_end, "up")
    ip("link", "set", "lo", "up", netns=ns)
    ip("link", "set", pod_end, "name", "eth0", netns=ns)
    # The MAC derives from the IP, so when an address is reused the neighbour caches of
    # the host and of other pods stay right instead of pointing at a deleted veth.
    mac = "0a:58:" + ":".join(f"{int(o):02x}" for o in pod_ip.split("."))
    ip("link", "set", "eth0", "address", mac, netns=ns)
    ip("addr", "add", f"{pod_ip}/{cfg.pod_prefix_len}", "dev", "eth0", netns=ns)
    ip("link", "set", "eth0", "up", netns=ns)
    ip("route", "add", "default", "via", cfg.bridge_ip, netns=ns)


def pids_in_netns(ns: str) -> list[int]:
    out = ip("netns", "pids", ns, check=False).stdout
    return [int(p) for p in out.split()]


def delete_pod_netns(ns: str) -> None:
    """Remove the namespace (its veth pair goes with it) and its /etc/netns files."""
    if (NETNS_RUN / ns).exists():
        ip("netns", "del", ns, check=False)
    shutil.rmtree(NETNS_ETC / ns, ignore_errors=True)


def our_namespaces(cfg: Config) -> list[str]:
    if not NETNS_RUN.exists():
        return []
    return sorted(p.name for p in NETNS_RUN.iterdir() if p.name.startswith(cfg.netns_prefix))


def hosts_header(pod_ip: str, hostname: str, fqdns: list[str]) -> str:
    lines = [
        "127.0.0.1\tlocalhost",
        "::1\tlocalhost ip6-localhost ip6-loopback",
        f"{pod_ip}\t{' '.join([*fqdns, hostname])}",
    ]
    return "\n".join(lines) + "\n"


def write_in_place(path: Path, content: str) -> None:
    """Rewrite ``path`` keeping its inode.

    Running processes see the file through a bind mount of that inode; replacing the
    file by rename would leave them with the stale copy.
    """
    if path.exists() and path.read_text() == content:
        return
    with open(path, "a+") as f:
        f.seek(0)
        f.truncate()
        f.write(content)
