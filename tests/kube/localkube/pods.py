"""Run one pod: its network namespace, its containers as processes, probes, status.

One ``PodWorker`` thread per pod owns everything about that pod, so there is no
shared mutable state between pods; the agent only creates workers and asks them to
stop. The worker reports status to the API whenever what it would report changes.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import images, network, probes, procs
from .api import Api, ApiError
from .config import Config
from .events import Recorder
from .podspec import (
    DEFAULT_PATH,
    NotReadyYet,
    Resolver,
    container_env,
    expand,
    mounts_for,
    prepare_volumes,
)

Obj = dict[str, Any]
LAUNCHER = Path(__file__).resolve().parent / "launcher.py"
BACKOFF_BASE, BACKOFF_MAX = 1.0, 30.0  # shorter than kubelet's 10s..300s: tests wait less
TICK = 0.25


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def exit_code(returncode: int) -> int:
    """Popen's negative "killed by signal N" becomes the shell's 128+N, as kubelet reports."""
    return 128 - returncode if returncode < 0 else returncode


@dataclass
class Container:
    """Runtime state of one container of the pod."""

    spec: Obj
    init: bool = False
    proc: subprocess.Popen[bytes] | None = None
    image_id: str = ""
    container_id: str = ""
    started_at: str = ""
    restart_count: int = 0
    state: Obj = field(default_factory=lambda: {"waiting": {"reason": "ContainerCreating"}})
    last_state: Obj = field(default_factory=dict)
    next_start: float = 0.0
    started_mono: float = 0.0
    done: bool = False  # terminated and will not be restarted
    env: dict[str, str] = field(default_factory=dict)  # what the process was started with
    readiness: probes.ProbeState = field(init=False)
    liveness: probes.ProbeState = field(init=False)
    startup: probes.ProbeState = field(init=False)

    def __post_init__(self) -> None:
        self.readiness = probes.ProbeState(self.spec.get("readinessProbe"), initial=False)
        self.liveness = probes.ProbeState(self.spec.get("livenessProbe"), initial=True)
        self.startup = probes.ProbeState(self.spec.get("startupProbe"), initial=False)

    @property
    def name(self) -> str:
        return str(self.spec["name"])

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def status(self) -> Obj:
        started = self.running and self.startup.result
        return {
            "name": self.name,
            "image": self.spec["image"],
            "imageID": self.image_id,
            "containerID": self.container_id or None,
            "ready": bool(started and self.readiness.result),
            "started": bool(started),
            "restartCount": self.restart_count,
            "state": self.state,
            "lastState": self.last_state,
        }


class PodWorker(threading.Thread):
    """Owns one pod from start to teardown."""

    def __init__(
        self,
        cfg: Config,
        api: Api,
        pod: Obj,
        pod_ip: str,
        host_ip: str,
        network_ready: Callable[[], None] = lambda: None,
    ) -> None:
        super().__init__(name=f"pod-{pod['metadata']['name']}", daemon=True)
        self.cfg, self.api, self.pod = cfg, api, pod
        meta = pod["metadata"]
        self.uid: str = meta["uid"]
        self.key = f"{meta['namespace']}/{meta['name']}"
        self.path = f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}"
        self.pod_ip, self.host_ip = pod_ip, host_ip
        self.network_ready = network_ready  # called once the netns and its files exist
        self.netns = network.netns_name(cfg, self.uid)
        self.dir = cfg.pods / self.uid
        # hostNetwork pods share the host's network (and take the node's name).
        self.host_network = bool(pod["spec"].get("hostNetwork"))
        self.hostname = (pod["spec"].get("hostname") or meta["name"])[:63]
        if self.host_network:
            self.hostname = str(pod["spec"].get("nodeName", self.hostname))
        sub = pod["spec"].get("subdomain")
        domain = f"{sub}.{meta['namespace']}.svc.{cfg.cluster_domain}"
        self.fqdn = [f"{self.hostname}.{domain}"] if sub else []
        spec = pod["spec"]
        self.restart_policy: str = spec.get("restartPolicy", "Always")
        self.inits = [Container(c, init=True) for c in spec.get("initContainers", [])]
        self.containers = [Container(c) for c in spec.get("containers", [])]
        self.stop_grace: float | None = None  # set when asked to terminate
        self.finished = threading.Event()
        self._conditions: dict[str, tuple[bool, str]] = {}
        self._reported: str = ""
        self._message: tuple[str, str] | None = None  # (reason, message) while Pending
        self._volumes: dict[str, Path] | None = None
        self._start_time = now_iso()
        self.rules = images.load_rules(cfg.state / "images.yaml")
        self.event = Recorder(api, pod)

    def running_pids(self) -> dict[str, int]:
        """Container name -> pid, for containers whose process is running."""
        return {
            c.name: c.proc.pid
            for c in self.inits + self.containers
            if c.proc is not None and c.running
        }

    def container_envs(self) -> dict[str, dict[str, str]]:
        """Container name -> environment it was started with (for exec)."""
        return {c.name: c.env for c in self.inits + self.containers if c.env}

    # -- lifecycle -------------------------------------------------------------------

    def request_stop(self, grace: float) -> None:
        """Ask the worker to terminate the pod within ``grace`` seconds (idempotent)."""
        if self.stop_grace is None or grace < self.stop_grace:
            self.stop_grace = grace

    def run(self) -> None:
        try:
            self._run()
        except Exception as e:  # a bug must not leave processes behind
            print(f"pod {self.key}: worker failed: {e!r}", file=sys.stderr, flush=True)
            self._kill_all(0)
        finally:
            # The pod directory (logs, emptyDirs) stays until the pod object is deleted.
            try:
                network.delete_pod_netns(self.netns)
            finally:
                self.finished.set()

    def _run(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        if not self.host_network:
            network.create_pod_netns(self.cfg, self.netns, self.pod_ip, self.hostname, self.fqdn)
            self.network_ready()
        self._set_condition("PodReadyToStartContainers", True)
        self._report()
        while self.stop_grace is None:
            self._step()
            self._report()
            if self._terminal():
                break
            time.sleep(TICK)
        self._kill_all(self.stop_grace if self.stop_grace is not None else 0)
        self._report()

    def _terminal(self) -> bool:
        return self._phase() in ("Succeeded", "Failed")

    def _init_failed(self) -> bool:
        """An init container failed for good (it is not restarted under Never)."""
        return any(c.done and c.state.get("terminated", {}).get("exitCode") for c in self.inits)

    # -- one step of the control loop ------------------------------------------------

    def _step(self) -> None:
        if self._volumes is None:
            try:
                self._volumes = prepare_volumes(
                    self.api, self.pod, self.dir, Resolver(self.api, self._ns)
                )
                self._message = None
            except (NotReadyYet, ApiError) as e:
                self._message = ("ContainerCreating", str(e))
                time.sleep(0.5)
                return
        if self._init_failed():
            return
        pending_init = next((c for c in self.inits if not c.done), None)
        if pending_init is not None:
            self._drive(pending_init)
            return
        self._set_condition("Initialized", True)
        for c in self.containers:
            self._drive(c)

    @property
    def _ns(self) -> str:
        return str(self.pod["metadata"]["namespace"])

    def _drive(self, c: Container) -> None:
        """Start, watch and probe one container; apply the restart policy."""
        now = time.monotonic()
        if c.proc is not None and c.proc.poll() is not None:
            self._on_exit(c, exit_code(c.proc.returncode))
        if c.done:
            return
        if c.proc is None:
            if now >= c.next_start:
                self._start(c)
            return
        # Probes: startup gates liveness and readiness.
        if not c.startup.result:
            if c.startup.due(now):
                ok = self._probe(c, c.startup)
                c.startup.record(ok, now)
                if c.startup.exhausted:
                    self.event("Unhealthy", "Startup probe failed", c.name, warning=True)
                    self.event("Killing", f"Container {c.name} failed startup probe", c.name)
                    self._stop_container(c, self._grace())
            return
        if c.liveness.due(now):
            ok = self._probe(c, c.liveness)
            if not c.liveness.record(ok, now):
                self.event("Unhealthy", "Liveness probe failed", c.name, warning=True)
                msg = f"Container {c.name} failed liveness probe, will be restarted"
                self.event("Killing", msg, c.name)
                self._stop_container(c, self._grace())
                return
        if c.readiness.due(now):
            ok = self._probe(c, c.readiness)
            was = c.readiness.result
            if was != c.readiness.record(ok, now) and not ok:
                self.event("Unhealthy", "Readiness probe failed", c.name, warning=True)

    def _probe(self, c: Container, state: probes.ProbeState) -> bool:
        assert c.proc is not None and state.probe is not None
        return probes.run_probe(state.probe, c.spec, self.pod_ip, c.proc.pid, c.env)

    def _grace(self) -> float:
        return float(self.pod["spec"].get("terminationGracePeriodSeconds", 30))

    def _start(self, c: Container) -> None:
        try:
            resolved = images.resolve(
                c.spec["image"], c.spec.get("command"), c.spec.get("args"), self.rules
            )
        except images.ImageError as e:
            c.state = {"waiting": {"reason": "ErrImagePull", "message": str(e)}}
            self.event("Failed", str(e), c.name, warning=True)
            c.next_start = time.monotonic() + 5
            return
        status_view = {**self.pod, "status": self._status()}
        base = {
            "PATH": ":".join([*resolved.path, os.environ.get("PATH", DEFAULT_PATH)]),
            "HOME": "/root",
            "HOSTNAME": self.hostname,
            "PYTHONUNBUFFERED": "1",
            # What kubelet injects for the "kubernetes" Service; in-cluster clients use it.
            "KUBERNETES_SERVICE_HOST": self.cfg.bridge_ip,
            "KUBERNETES_SERVICE_PORT": str(self.cfg.api_proxy_port),
            "KUBERNETES_SERVICE_PORT_HTTPS": str(self.cfg.api_proxy_port),
            "KUBERNETES_PORT": f"tcp://{self.cfg.bridge_ip}:{self.cfg.api_proxy_port}",
            **resolved.env,
        }
        try:
            env = container_env(status_view, c.spec, Resolver(self.api, self._ns), base)
        except (NotReadyYet, ApiError) as e:
            c.state = {"waiting": {"reason": "CreateContainerConfigError", "message": str(e)}}
            c.next_start = time.monotonic() + 2
            return
        argv = [expand(a, env) for a in resolved.argv]
        c.env = env
        c.container_id = f"localkube://{self.uid[:8]}-{c.name}-{c.restart_count}"
        spec_file = self.dir / f"{c.name}.json"
        spec_file.write_text(
            json.dumps(
                {
                    "hostname": self.hostname,
                    "mounts": mounts_for(c.spec, self._volumes or {}),
                    "mountpoint_record": str(self.cfg.state / "mountpoints"),
                    "workdir": c.spec.get("workingDir") or resolved.workdir,
                    "env": env,
                    "argv": argv,
                }
            )
        )
        if self.host_network:  # still a private mount namespace for the volume mounts
            launch = ["unshare", "--uts", "--mount", "--propagation", "private", "--"]
        else:
            launch = ["ip", "netns", "exec", self.netns, "unshare", "--uts", "--"]
        launch += [sys.executable, str(LAUNCHER), str(spec_file)]
        with open(self.dir / f"{c.name}.log", "ab") as log:
            c.proc = subprocess.Popen(
                launch,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        # Lets `down` find the process even if the agent died (hostNetwork pods have no
        # netns to sweep).
        (self.dir / f"{c.name}.pid").write_text(f"{c.proc.pid} {procs.start_time(c.proc.pid)}\n")
        c.image_id = resolved.image_id
        c.started_at = now_iso()
        c.started_mono = time.monotonic()
        c.state = {"running": {"startedAt": c.started_at}}
        self.event("Pulled", f'Container image "{c.spec["image"]}" already present', c.name)
        self.event("Started", f"Started container {c.name}", c.name)
        for probe in (c.readiness, c.liveness, c.startup):
            probe.reset(c.started_mono)
        if c.startup.probe is None:
            c.startup.result = True

    def _on_exit(self, c: Container, code: int) -> None:
        """Record the termination and decide whether (and when) to restart."""
        c.proc = None
        terminated = {
            "exitCode": code,
            "reason": "Completed" if code == 0 else "Error",
            "startedAt": c.started_at,
            "finishedAt": now_iso(),
            "containerID": c.container_id,
        }
        policy = "OnFailure" if c.init and self.restart_policy == "Always" else self.restart_policy
        restart = policy == "Always" or (policy == "OnFailure" and code != 0)
        if c.init and code == 0:
            restart = False
        if not restart or self.stop_grace is not None:
            c.state = {"terminated": terminated}
            c.done = True
            return
        c.last_state = {"terminated": terminated}
        ran_for = time.monotonic() - c.started_mono
        backoff = 0.0 if ran_for > 600 else min(BACKOFF_MAX, BACKOFF_BASE * 2**c.restart_count)
        c.restart_count += 1
        c.next_start = time.monotonic() + backoff
        c.state = {"waiting": {"reason": "CrashLoopBackOff" if backoff else "Restarting"}}
        if backoff:
            msg = f"Back-off restarting failed container {c.name}"
            self.event("BackOff", msg, c.name, warning=True)

    def _stop_container(self, c: Container, grace: float) -> None:
        """SIGTERM the container's process group, SIGKILL after ``grace`` seconds."""
        proc = c.proc
        if proc is None:
            return
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue
        # Children that left the group but stayed in the namespace go too.
        if proc.poll() is not None:
            self._on_exit(c, exit_code(proc.returncode))

    def _kill_all(self, grace: float) -> None:
        """Stop every container in parallel within one grace period, then sweep the netns."""
        running = [c for c in self.inits + self.containers if c.proc is not None]
        for c in running:
            self.event("Killing", f"Stopping container {c.name}", c.name)
        threads = [threading.Thread(target=self._stop_container, args=(c, grace)) for c in running]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for pid in network.pids_in_netns(self.netns):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for c in self.inits + self.containers:
            if "running" in c.state or "waiting" in c.state:
                c.state = {
                    "terminated": {
                        "exitCode": 137 if "running" in c.state else 0,
                        "reason": "Error" if "running" in c.state else "ContainerCannotRun",
                        "startedAt": c.started_at or None,
                        "finishedAt": now_iso(),
                    }
                }
            c.done = True

    # -- status ----------------------------------------------------------------------

    def _set_condition(self, kind: str, value: bool) -> None:
        old = self._conditions.get(kind)
        if old is None or old[0] != value:
            self._conditions[kind] = (value, now_iso())

    def _phase(self) -> str:
        cs = self.containers
        if self._init_failed():
            return "Failed"
        if not all(c.done for c in self.inits):
            return "Pending"
        if all(c.done for c in cs):
            codes = [c.state.get("terminated", {}).get("exitCode", 0) for c in cs]
            return "Succeeded" if all(code == 0 for code in codes) else "Failed"
        if any(c.running or c.restart_count or c.done for c in cs):
            return "Running"
        return "Pending"

    def _status(self) -> Obj:
        ready = all(c.status()["ready"] for c in self.containers) and self.stop_grace is None
        self._set_condition("ContainersReady", ready)
        self._set_condition("Ready", ready)
        self._set_condition("Initialized", all(c.done for c in self.inits))
        scheduled = next(
            (
                c
                for c in self.pod.get("status", {}).get("conditions", [])
                if c.get("type") == "PodScheduled"
            ),
            {"type": "PodScheduled", "status": "True"},
        )
        conditions = [scheduled]
        for kind in ("PodReadyToStartContainers", "Initialized", "ContainersReady", "Ready"):
            if kind in self._conditions:
                value, since = self._conditions[kind]
                cond = {"type": kind, "status": "True" if value else "False"}
                cond["lastTransitionTime"] = since
                if not value and kind in ("ContainersReady", "Ready"):
                    not_ready = [c.name for c in self.containers if not c.status()["ready"]]
                    cond["reason"] = "ContainersNotReady"
                    cond["message"] = f"containers with unready status: [{' '.join(not_ready)}]"
                conditions.append(cond)
        status: Obj = {
            "phase": self._phase(),
            "conditions": conditions,
            "hostIP": self.host_ip,
            "hostIPs": [{"ip": self.host_ip}],
            "podIP": self.pod_ip,
            "podIPs": [{"ip": self.pod_ip}],
            "startTime": self._start_time,
            "containerStatuses": [c.status() for c in self.containers],
        }
        if self.inits:
            status["initContainerStatuses"] = [c.status() for c in self.inits]
        # null removes a field in a merge patch, so a cleared message really goes away.
        status["reason"], status["message"] = self._message or (None, None)
        return status

    def _report(self) -> None:
        """Patch the pod status if it differs from the last one reported."""
        status = self._status()
        encoded = json.dumps(status, sort_keys=True)
        if encoded == self._reported:
            return
        try:
            self.api.merge_patch(self.path + "/status", {"status": status})
            self._reported = encoded
        except ApiError as e:
            if e.status != 404:
                print(f"pod {self.key}: status update failed: {e}", file=sys.stderr, flush=True)
        except OSError as e:
            print(f"pod {self.key}: status update failed: {e}", file=sys.stderr, flush=True)
