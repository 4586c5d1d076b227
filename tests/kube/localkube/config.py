"""Where the local cluster keeps its state and which ports and addresses it uses.

One place for every path and number, so ``up``, ``down``, the agent and the tests
agree without passing things around. Override with environment variables.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[3]
CONTROLPLANE_DIR = REPO_ROOT / "tests" / "kube" / "controlplane"


def _env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


@dataclass(frozen=True)
class Config:
    """All settings of one local cluster."""

    state: Path = field(
        default_factory=lambda: Path(os.environ.get("FLOTILLA_KUBE_STATE", "/tmp/flotilla-kube"))
    )
    nodes: int = field(default_factory=lambda: _env_int("FLOTILLA_KUBE_NODES", 3))
    apiserver_port: int = field(default_factory=lambda: _env_int("FLOTILLA_KUBE_API_PORT", 16443))
    etcd_port: int = field(default_factory=lambda: _env_int("FLOTILLA_KUBE_ETCD_PORT", 23790))
    # Pods live on 10.244.0.0/16 behind one bridge; node i owns 10.244.i.0/24.
    bridge: str = "flk0"
    bridge_ip: str = "10.244.0.1"
    pod_prefix: str = "10.244"
    pod_prefix_len: int = 16
    netns_prefix: str = "flk-"
    service_cidr: str = "10.96.0.0/16"
    # Pods reach the apiserver at bridge_ip:api_proxy_port (see apiproxy.py).
    api_proxy_port: int = 443
    cluster_domain: str = "cluster.local"

    @property
    def etcd_peer_port(self) -> int:
        return self.etcd_port + 10

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.apiserver_port}"

    @property
    def pki(self) -> Path:
        return self.state / "pki"

    @property
    def logs(self) -> Path:
        return self.state / "logs"

    @property
    def pids(self) -> Path:
        return self.state / "pids"

    @property
    def pods(self) -> Path:
        """Per-pod runtime files: logs, emptyDirs, projected config files."""
        return self.state / "pods"

    @property
    def volumes(self) -> Path:
        """Host directories backing PersistentVolumes."""
        return self.state / "volumes"

    @property
    def kubeconfig(self) -> Path:
        return self.state / "admin.kubeconfig"

    def component_kubeconfig(self, stem: str) -> Path:
        return self.state / f"{stem}.kubeconfig"

    def node_name(self, index: int) -> str:
        return f"local-{index}"

    def node_pod_cidr(self, index: int) -> str:
        return f"{self.pod_prefix}.{index}.0/24"


def binaries_dir() -> Path | None:
    """Directory of the cached control-plane binaries, if built (see controlplane/build.sh)."""
    explicit = os.environ.get("FLOTILLA_KUBE_BIN")
    if explicit:
        return Path(explicit)
    version = None
    for line in (CONTROLPLANE_DIR / "go.mod").read_text().splitlines():
        parts = line.split()
        if parts[:2] == ["require", "k8s.io/kubernetes"]:
            version = parts[2]
    root = Path(
        os.environ.get(
            "FLOTILLA_KUBE_CACHE",
            Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "flotilla" / "kube",
        )
    )
    candidate = root / str(version) / "bin"
    return candidate if (candidate / "kube-apiserver").exists() else None
