"""The local kubelet process: nodes, pods, cluster DNS hosts files, volume provisioner.

One process plays the kubelet of every local node. Each concern runs as a watch
loop in its own thread and hands events to small handlers under one lock; the pods
themselves are driven by one ``PodWorker`` thread each (see ``pods.py``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from . import apiproxy, dns, kubeletapi, network, provisioner
from .api import Api, ApiError
from .config import Config
from .node import Nodes, kubelet_port
from .pods import PodWorker

Obj = dict[str, Any]


class IpPool:
    """Pod addresses: node i hands out 10.244.i.2 .. 10.244.i.254."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.used: set[str] = set()
        self.last: dict[int, int] = {}

    def take(self, node_index: int) -> str:
        """Round robin, so a just-released address is not handed out again at once."""
        start = self.last.get(node_index, 1)
        for step in range(1, 254):
            host = (start - 2 + step) % 253 + 2
            ip = f"{self.cfg.pod_prefix}.{node_index}.{host}"
            if ip not in self.used:
                self.used.add(ip)
                self.last[node_index] = host
                return ip
        raise RuntimeError(f"node {node_index} has no free pod address")

    def give_back(self, ip: str) -> None:
        self.used.discard(ip)


class Agent:
    """The kubelet of all local nodes, plus the cluster services it needs around it.

    Watches pods (to run those bound to our nodes, and for DNS), Services (DNS), claims
    and volumes (provisioning); renews node leases; serves the kubelet API.
    """

    def __init__(self, cfg: Config, version: str) -> None:
        self.cfg = cfg
        self.api = Api(cfg)
        self.nodes = Nodes(cfg, self.api, version)
        self.provisioner = provisioner.Provisioner(cfg, self.api)
        self.ips = IpPool(cfg)
        self.lock = threading.RLock()
        self.stopping = threading.Event()
        self.workers: dict[str, PodWorker] = {}
        self.pods: dict[str, Obj] = {}  # every pod in the cluster, by uid (for DNS)
        self.services: dict[str, Obj] = {}
        self._finalizing: set[str] = set()

    # -- start-up --------------------------------------------------------------------

    def sweep_stale(self) -> None:
        """Remove namespaces left by a previous agent (their processes die with them)."""
        for ns in network.our_namespaces(self.cfg):
            for pid in network.pids_in_netns(ns):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            network.delete_pod_netns(ns)

    def run(self) -> None:
        self.sweep_stale()
        network.ensure_bridge(self.cfg)
        try:
            apiproxy.start(
                (self.cfg.bridge_ip, self.cfg.api_proxy_port),
                ("127.0.0.1", self.cfg.apiserver_port),
            )
        except OSError as e:  # only in-cluster API clients need it
            print(f"no apiserver relay for pods: {e}", file=sys.stderr, flush=True)
        provisioner.ensure_storage_class(self.api)
        self.nodes.register()
        for i in range(1, self.cfg.nodes + 1):
            kubeletapi.serve(self.cfg, kubelet_port(i), self._kubelet_lookup)
        loops: list[tuple[str, Callable[[], None]]] = [
            ("heartbeat", self._heartbeat_loop),
            ("pods", lambda: self._watch("/api/v1/pods", self._on_pod, self._drop_unseen)),
            (
                "services",
                lambda: self._watch("/api/v1/services", self._on_service, self._drop_services),
            ),
            ("pvcs", lambda: self._watch("/api/v1/persistentvolumeclaims", self._on_pvc)),
            ("pvs", lambda: self._watch("/api/v1/persistentvolumes", self._on_pv)),
        ]
        for name, target in loops:
            threading.Thread(target=self._guard(name, target), name=name, daemon=True).start()
        print(f"local kubelet running nodes {', '.join(self.nodes.names)}", flush=True)
        self.stopping.wait()
        self.shutdown()

    def _guard(self, name: str, target: Callable[[], None]) -> Callable[[], None]:
        """Keep a loop alive across unexpected errors (logged), until stopping."""

        def run() -> None:
            while not self.stopping.is_set():
                try:
                    target()
                except Exception as e:
                    print(f"{name} loop error: {e!r}", file=sys.stderr, flush=True)
                    time.sleep(1)

        return run

    def shutdown(self) -> None:
        """Stop every pod quickly (the whole cluster is going away)."""
        with self.lock:
            workers = list(self.workers.values())
        for w in workers:
            w.request_stop(2)
        for w in workers:
            w.finished.wait(20)

    # -- loops -----------------------------------------------------------------------

    def _heartbeat_loop(self) -> None:
        count = 0
        while not self.stopping.wait(10):
            count += 1
            self.nodes.heartbeat(status=count % 3 == 0)

    def _watch(
        self,
        path: str,
        handler: Callable[[str, Obj], None],
        on_sync: Callable[[set[str]], None] | None = None,
    ) -> None:
        """Feed watch events to ``handler``; after each (re-)list, tell ``on_sync`` which
        uids exist, so state about objects deleted while not watching can go."""
        listed: set[str] = set()
        for kind, obj in self.api.watch(path, stop=self.stopping.is_set):
            if kind == "RESET":
                listed = set()
            elif kind == "SYNCED":
                if on_sync is not None:
                    with self.lock:
                        on_sync(listed)
            else:
                if kind == "ADDED":
                    listed.add(obj["metadata"]["uid"])
                with self.lock:
                    handler(kind, obj)

    # -- handlers (called with the lock held) -----------------------------------------

    def _on_pod(self, kind: str, pod: Obj) -> None:
        uid = pod["metadata"]["uid"]
        if kind == "DELETED":
            self.pods.pop(uid, None)
        else:
            self.pods[uid] = pod
        self._refresh_hosts()
        node = pod["spec"].get("nodeName")
        if node not in self.nodes.names:
            return
        worker = self.workers.get(uid)
        if kind == "DELETED":
            if worker is not None and uid not in self._finalizing:
                worker.request_stop(0)
                threading.Thread(target=self._forget, args=(worker,), daemon=True).start()
            return
        meta = pod["metadata"]
        if meta.get("deletionTimestamp"):
            grace = float(meta.get("deletionGracePeriodSeconds", 30))
            if worker is not None:
                worker.request_stop(grace)
            if uid not in self._finalizing:
                self._finalizing.add(uid)
                threading.Thread(target=self._finalize, args=(pod, worker), daemon=True).start()
            return
        if worker is None and pod.get("status", {}).get("phase") not in ("Succeeded", "Failed"):
            index = self.nodes.index(node)
            host_ip = "127.0.0.1"
            pod_ip = host_ip if pod["spec"].get("hostNetwork") else self.ips.take(index)
            worker = PodWorker(self.cfg, self.api, pod, pod_ip, host_ip, self._hosts_changed)
            self.workers[uid] = worker
            worker.start()

    def _drop_unseen(self, listed: set[str]) -> None:
        """After a re-list, pods we run that no longer exist are stopped and forgotten."""
        for uid, worker in list(self.workers.items()):
            if uid not in listed and uid not in self._finalizing:
                worker.request_stop(0)
                threading.Thread(target=self._forget, args=(worker,), daemon=True).start()
        for uid in list(self.pods):
            if uid not in listed:
                del self.pods[uid]

    def _finalize(self, pod: Obj, worker: PodWorker | None) -> None:
        """Once the pod's processes are gone, remove the pod object for good."""
        meta = pod["metadata"]
        if worker is not None:
            worker.finished.wait()
        try:
            self.api.delete(
                f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}",
                {"gracePeriodSeconds": 0, "preconditions": {"uid": meta["uid"]}},
            )
        except ApiError as e:
            if e.status != 409:
                print(f"final delete of {meta['name']} failed: {e}", file=sys.stderr, flush=True)
        with self.lock:
            self._finalizing.discard(meta["uid"])
        if worker is not None:
            self._forget(worker)

    def _forget(self, worker: PodWorker) -> None:
        """After the pod is gone for good: drop its files and free its address."""
        worker.finished.wait()
        shutil.rmtree(worker.dir, ignore_errors=True)
        with self.lock:
            if self.workers.get(worker.uid) is worker:
                del self.workers[worker.uid]
                self.ips.give_back(worker.pod_ip)

    def _kubelet_lookup(self, namespace: str, name: str) -> kubeletapi.Target | None:
        """What the kubelet API needs of a pod: log directory, running processes, env."""
        with self.lock:
            matches = [w for w in self.workers.values() if w.key == f"{namespace}/{name}"]
        if not matches:
            return None
        worker = next((w for w in matches if not w.finished.is_set()), matches[-1])
        return kubeletapi.Target(
            log_dir=worker.dir,
            running=lambda: not worker.finished.is_set(),
            pids=worker.running_pids(),
            envs=worker.container_envs(),
        )

    def _drop_services(self, listed: set[str]) -> None:
        for uid in set(self.services) - listed:
            del self.services[uid]
        self._refresh_hosts()

    def _on_service(self, kind: str, svc: Obj) -> None:
        uid = svc["metadata"]["uid"]
        if kind == "DELETED":
            self.services.pop(uid, None)
        else:
            self.services[uid] = svc
        self._refresh_hosts()

    def _hosts_changed(self) -> None:
        """A pod's netns just got its (bare) hosts file: fill in the cluster's names."""
        with self.lock:
            self._refresh_hosts()

    def _refresh_hosts(self) -> None:
        """Rewrite the hosts file of every running pod (in place; unchanged files are skipped)."""
        recs = dns.records(self.pods.values(), self.services.values(), self.cfg.cluster_domain)
        for worker in self.workers.values():
            etc = network.NETNS_ETC / worker.netns / "hosts"
            # A stopping pod's files are being removed: do not write them back.
            if worker.stop_grace is not None or worker.finished.is_set() or not etc.exists():
                continue
            content = network.hosts_header(worker.pod_ip, worker.hostname, worker.fqdn)
            content += "\n".join(dns.hosts_lines(recs, worker.pod["metadata"]["namespace"]))
            try:
                network.write_in_place(etc, content + "\n")
            except OSError as e:  # raced with the pod going away
                print(f"hosts file of {worker.key}: {e}", file=sys.stderr, flush=True)

    def _on_pvc(self, kind: str, pvc: Obj) -> None:
        if kind != "DELETED":
            self.provisioner.on_claim(pvc)

    def _on_pv(self, kind: str, pv: Obj) -> None:
        if kind != "DELETED":
            self.provisioner.on_volume(pv)


def main(version: str) -> None:
    agent = Agent(Config(), version)

    def on_signal(signum: int, frame: object) -> None:
        agent.stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    agent.run()
