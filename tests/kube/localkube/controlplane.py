"""etcd, kube-apiserver, kube-controller-manager and kube-scheduler on loopback.

The flags are the minimum for a real, secure control plane: TLS everywhere on the
apiserver, Node+RBAC authorization, service-account token signing, and the
controllers (StatefulSet, garbage collector, PV binder, ...) the operator relies on.
"""

from __future__ import annotations

import shutil
import ssl
import time
import urllib.request
from pathlib import Path

from . import procs
from .config import Config
from .pki import Pki

# Order matters for start-up (each waits for the one before) and reversed for shutdown.
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")


def etcd_argv(cfg: Config) -> list[str]:
    etcd = shutil.which("etcd") or "/usr/bin/etcd"
    client = f"http://127.0.0.1:{cfg.etcd_port}"
    peer = f"http://127.0.0.1:{cfg.etcd_peer_port}"
    return [
        etcd,
        "--name=flotilla-local",
        f"--data-dir={cfg.state / 'etcd'}",
        f"--listen-client-urls={client}",
        f"--advertise-client-urls={client}",
        f"--listen-peer-urls={peer}",
        f"--initial-advertise-peer-urls={peer}",
        f"--initial-cluster=flotilla-local={peer}",
        "--listen-metrics-urls=",
        "--log-level=warn",
    ]


def apiserver_argv(cfg: Config, bindir: Path) -> list[str]:
    pki = Pki(cfg.pki)
    return [
        str(bindir / "kube-apiserver"),
        f"--etcd-servers=http://127.0.0.1:{cfg.etcd_port}",
        "--bind-address=127.0.0.1",
        "--advertise-address=127.0.0.1",
        f"--secure-port={cfg.apiserver_port}",
        f"--tls-cert-file={pki.cert('apiserver')}",
        f"--tls-private-key-file={pki.key('apiserver')}",
        f"--client-ca-file={pki.ca_cert}",
        f"--kubelet-client-certificate={pki.cert('apiserver-kubelet-client')}",
        f"--kubelet-client-key={pki.key('apiserver-kubelet-client')}",
        f"--kubelet-certificate-authority={pki.ca_cert}",
        # Node names are not resolvable: reach the local kubelet at its InternalIP.
        "--kubelet-preferred-address-types=InternalIP",
        f"--service-account-key-file={cfg.pki / 'sa.pub'}",
        f"--service-account-signing-key-file={pki.key('sa')}",
        f"--service-account-issuer=https://kubernetes.default.svc.{cfg.cluster_domain}",
        f"--service-cluster-ip-range={cfg.service_cidr}",
        "--authorization-mode=Node,RBAC",
        "--allow-privileged=true",
        # No host answers for the "kubernetes" Service endpoint on loopback.
        "--endpoint-reconciler-type=none",
        # etcd 3.4 has no watch progress requests, which WatchList needs. The local
        # kubelet speaks exec over WebSocket only: relay it rather than translate to SPDY.
        "--feature-gates=WatchList=false,TranslateStreamCloseWebsocketRequests=false",
        "--profiling=false",
        "--v=1",
    ]


def controller_manager_argv(cfg: Config, bindir: Path) -> list[str]:
    pki = Pki(cfg.pki)
    kubeconfig = cfg.component_kubeconfig("controller-manager")
    return [
        str(bindir / "kube-controller-manager"),
        f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        "--bind-address=127.0.0.1",
        "--secure-port=0",
        "--leader-elect=false",
        "--use-service-account-credentials=true",
        f"--service-account-private-key-file={pki.key('sa')}",
        f"--root-ca-file={pki.ca_cert}",
        f"--cluster-signing-cert-file={pki.ca_cert}",
        f"--cluster-signing-key-file={pki.key('ca')}",
        f"--service-cluster-ip-range={cfg.service_cidr}",
        # Pod CIDRs are assigned by the local kubelet when it registers its nodes.
        "--allocate-node-cidrs=false",
        "--controllers=*,-nodeipam,-cloud-node-lifecycle,-service-lb-controller,-node-route-controller",
        "--feature-gates=WatchListClient=false",
        "--profiling=false",
        "--v=1",
    ]


def scheduler_argv(cfg: Config, bindir: Path) -> list[str]:
    kubeconfig = cfg.component_kubeconfig("scheduler")
    return [
        str(bindir / "kube-scheduler"),
        f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        "--bind-address=127.0.0.1",
        "--secure-port=0",
        "--leader-elect=false",
        "--profiling=false",
        "--v=1",
    ]


def _ssl_context(cfg: Config) -> ssl.SSLContext:
    pki = Pki(cfg.pki)
    ctx = ssl.create_default_context(cafile=str(pki.ca_cert))
    ctx.load_cert_chain(str(pki.cert("admin")), str(pki.key("admin")))
    return ctx


def _http_ok(url: str, ctx: ssl.SSLContext | None = None) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2, context=ctx) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def wait_until(what: str, check: object, timeout: float, log: Path | None = None) -> None:
    """Poll ``check()`` until true; on timeout raise with the tail of ``log``."""
    assert callable(check)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    tail = ""
    if log is not None and log.exists():
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
    raise TimeoutError(f"{what} not ready after {timeout:.0f}s\n{tail}")


def start(cfg: Config, bindir: Path) -> None:
    """Start the four components (those not already running) and wait for each."""
    pki = Pki(cfg.pki)
    pki.ensure(
        ["127.0.0.1", "10.96.0.1", cfg.bridge_ip],
        ["localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"],
    )
    pki.write_kubeconfig(cfg.kubeconfig, "admin", cfg.server)
    for stem in ("controller-manager", "scheduler"):
        pki.write_kubeconfig(cfg.component_kubeconfig(stem), stem, cfg.server)

    ctx = _ssl_context(cfg)
    argvs = {
        "etcd": etcd_argv(cfg),
        "kube-apiserver": apiserver_argv(cfg, bindir),
        "kube-controller-manager": controller_manager_argv(cfg, bindir),
        "kube-scheduler": scheduler_argv(cfg, bindir),
    }
    checks = {
        "etcd": lambda: _http_ok(f"http://127.0.0.1:{cfg.etcd_port}/health"),
        "kube-apiserver": lambda: _http_ok(f"{cfg.server}/readyz", ctx),
    }
    for name in COMPONENTS:
        if procs.recorded(cfg.pids, name) is None:
            procs.spawn(name, argvs[name], cfg.pids, cfg.logs)
        if name in checks:
            log = cfg.logs / f"{name}.log"
            wait_until(name, checks[name], 60, log)


def stop(cfg: Config) -> None:
    """Stop the components in reverse order."""
    for name in reversed(COMPONENTS):
        procs.stop(cfg.pids, name)


def running(cfg: Config) -> dict[str, int | None]:
    return {name: procs.recorded(cfg.pids, name) for name in COMPONENTS}
