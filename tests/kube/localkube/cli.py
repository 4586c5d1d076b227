"""``python -m tests.kube.localkube up|down|status``: the one-command cluster.

``up`` builds the control plane the first time (cached afterwards), starts etcd, the
three Kubernetes components and the local kubelet, and returns once every node is
Ready. ``down`` stops all of it and removes every process, network namespace, bridge,
mount point and file it created.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from . import controlplane, network, procs
from .api import Api, ApiError
from .config import CONTROLPLANE_DIR, REPO_ROOT, Config, binaries_dir

AGENT = "localkube-agent"


def build() -> Path:
    """Build (or find cached) control-plane binaries; returns their directory."""
    cached = binaries_dir()
    if cached is not None:
        return cached
    out = subprocess.run(
        ["bash", str(CONTROLPLANE_DIR / "build.sh")], check=True, stdout=subprocess.PIPE, text=True
    )
    return Path(out.stdout.strip().splitlines()[-1])


def _check_host() -> None:
    if os.geteuid() != 0:
        sys.exit("localkube needs root: it creates network namespaces and a bridge")
    for tool in ("etcd", "ip", "unshare", "mount"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} not found: run tests/kube/install-deps.sh")


def nodes_ready(api: Api, names: list[str]) -> bool:
    try:
        items = api.get("/api/v1/nodes")["items"]
    except (ApiError, OSError):
        return False
    ready = {
        n["metadata"]["name"]
        for n in items
        for c in n.get("status", {}).get("conditions", [])
        if c["type"] == "Ready" and c["status"] == "True"
    }
    return set(names) <= ready


def _exists(api: Api, path: str) -> bool:
    try:
        return api.get_or_none(path) is not None
    except (ApiError, OSError):
        return False


def up(cfg: Config) -> None:
    _check_host()
    t0 = time.monotonic()
    bindir = build()
    t_built = time.monotonic()
    cfg.state.mkdir(parents=True, exist_ok=True)
    version = subprocess.run(
        [str(bindir / "kube-apiserver"), "--version"], check=True, capture_output=True, text=True
    ).stdout.split()[-1]
    controlplane.start(cfg, bindir)
    if procs.recorded(cfg.pids, AGENT) is None:
        # cwd (not PYTHONPATH) makes the tests package importable: the repository root
        # holds an "operator" package that must not shadow the stdlib during start-up.
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        argv = [sys.executable, "-m", "tests.kube.localkube", "agent", "--version", version]
        procs.spawn(AGENT, argv, cfg.pids, cfg.logs, env=env, cwd=REPO_ROOT)
    api = Api(cfg)
    names = [cfg.node_name(i) for i in range(1, cfg.nodes + 1)]
    controlplane.wait_until("nodes", lambda: nodes_ready(api, names), 60, cfg.logs / f"{AGENT}.log")
    # Pods cannot be created before the ServiceAccount controller made "default".
    controlplane.wait_until(
        "service account default/default",
        lambda: _exists(api, "/api/v1/namespaces/default/serviceaccounts/default"),
        30,
        cfg.logs / "kube-controller-manager.log",
    )
    t_ready = time.monotonic()
    print(
        f"cluster up: {len(names)} Ready nodes, Kubernetes {version} "
        f"(binaries {t_built - t0:.1f}s, start {t_ready - t_built:.1f}s)\n"
        f"export KUBECONFIG={cfg.kubeconfig}",
        flush=True,
    )


def down(cfg: Config) -> None:
    """Stop everything and leave no trace (safe to run repeatedly, or after a crash)."""
    procs.stop(cfg.pids, AGENT, grace=30)
    controlplane.stop(cfg)
    # Whatever still runs (say, after the agent crashed) goes too: recorded containers
    # (with their process groups), then anything left in a pod namespace.
    for pidfile in cfg.pods.glob("*/*.pid"):
        pid = procs.recorded(pidfile.parent, pidfile.stem)
        if pid is not None:
            procs.terminate(pid, 2)
    for ns in network.our_namespaces(cfg):
        procs.kill_all(network.pids_in_netns(ns), grace=2)
        network.delete_pod_netns(ns)
    if network.NETNS_ETC.exists():
        for leftover in network.NETNS_ETC.glob(cfg.netns_prefix + "*"):
            network.delete_pod_netns(leftover.name)
    network.delete_bridge(cfg)
    _remove_mountpoints(cfg.state / "mountpoints")
    # `ip netns add` bind-mounts /run/netns on first use; once no namespace is left
    # it is just that mount: remove it (ip recreates it when needed), and /etc/netns.
    if network.NETNS_RUN.exists() and not any(network.NETNS_RUN.iterdir()):
        subprocess.run(["umount", str(network.NETNS_RUN)], check=False, capture_output=True)
        subprocess.run(["rmdir", str(network.NETNS_RUN)], check=False, capture_output=True)
    if network.NETNS_ETC.exists() and not any(network.NETNS_ETC.iterdir()):
        network.NETNS_ETC.rmdir()
    shutil.rmtree(cfg.state, ignore_errors=True)
    print("cluster down", flush=True)


def _remove_mountpoints(record: Path) -> None:
    """Remove the (empty) mount points containers created on the host, deepest first."""
    if not record.exists():
        return
    paths = sorted({Path(p) for p in record.read_text().split()}, key=lambda p: -len(p.parts))
    for p in paths:
        try:
            if p.is_dir():
                p.rmdir()
            elif p.is_file() and p.stat().st_size == 0:
                p.unlink()
        except OSError:
            pass  # not empty: someone else's files live there now


def status(cfg: Config) -> int:
    procs_state = {**controlplane.running(cfg), AGENT: procs.recorded(cfg.pids, AGENT)}
    print(json.dumps({"processes": procs_state, "netns": network.our_namespaces(cfg)}, indent=2))
    if all(procs_state.values()):
        print(f"export KUBECONFIG={cfg.kubeconfig}")
        return 0
    return 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.kube.localkube")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("up", help="build if needed, start the cluster, wait for Ready nodes")
    sub.add_parser("down", help="stop the cluster and remove everything it created")
    sub.add_parser("status", help="show which processes are running")
    sub.add_parser("build", help="only build (or locate) the control-plane binaries")
    inst = sub.add_parser("install-image", help="install a project version as flotilla-*:TAG")
    inst.add_argument("tag")
    inst.add_argument("--source", help="git ref or directory (default: the working tree)")
    agent = sub.add_parser("agent", help="run the local kubelet in the foreground")
    agent.add_argument("--version", default="v0.0.0")
    args = parser.parse_args(argv)
    cfg = Config()
    if args.command == "up":
        up(cfg)
    elif args.command == "down":
        down(cfg)
    elif args.command == "status":
        return status(cfg)
    elif args.command == "build":
        print(build())
    elif args.command == "install-image":
        from .install import install_image

        print(install_image(args.tag, args.source))
    elif args.command == "agent":
        from .agent import main as agent_main

        agent_main(args.version)
    return 0
