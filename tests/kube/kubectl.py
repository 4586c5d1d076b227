"""Test helpers: plain ``kubectl`` through subprocess, and bounded polling.

Tests talk to the cluster only the way a user would, so what they prove holds for the
real API server and controllers, not for a client library's view of them.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")
Obj = dict[str, Any]


def kubectl(*args: str, stdin: str | None = None, check: bool = True) -> str:
    """Run kubectl (KUBECONFIG comes from the environment) and return stdout."""
    proc = subprocess.run(
        ["kubectl", *args], input=stdin, capture_output=True, text=True, timeout=120
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} failed ({proc.returncode}): {proc.stderr}")
    return proc.stdout


def kubectl_error(*args: str, stdin: str | None = None) -> str:
    """Run kubectl expecting it to fail; return its error output."""
    proc = subprocess.run(
        ["kubectl", *args], input=stdin, capture_output=True, text=True, timeout=120
    )
    if proc.returncode == 0:
        raise AssertionError(f"kubectl {' '.join(args)} succeeded but should fail: {proc.stdout}")
    return proc.stderr


def apply(manifests: list[Obj], namespace: str) -> None:
    doc = json.dumps({"apiVersion": "v1", "kind": "List", "items": manifests})
    kubectl("apply", "-n", namespace, "-f", "-", stdin=doc)


def get(kind: str, name: str | None, namespace: str | None) -> Obj:
    args = ["get", kind] + ([name] if name else []) + ["-o", "json"]
    if namespace:
        args += ["-n", namespace]
    result: Obj = json.loads(kubectl(*args))
    return result


def get_or_none(kind: str, name: str, namespace: str | None) -> Obj | None:
    args = ["get", kind, name, "-o", "json", "--ignore-not-found"]
    if namespace:
        args += ["-n", namespace]
    out = kubectl(*args)
    return json.loads(out) if out.strip() else None


def wait_for(
    what: str, probe: Callable[[], T | None], timeout: float = 60, interval: float = 0.5
) -> T:
    """Poll ``probe`` until it returns something truthy; fail clearly after ``timeout``.

    ``probe`` may raise AssertionError or OSError while the condition does not hold yet;
    the last such error (or the last value) is reported on timeout.
    """
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            value = probe()
            if value:
                return value
            last = value
        except (AssertionError, OSError, KeyError, ValueError) as e:
            last = e
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"timed out after {timeout:.0f}s waiting for {what}; last: {last!r}"
            )
        time.sleep(interval)


def http(url: str, method: str = "GET", data: bytes | None = None, timeout: float = 5) -> str:
    """HTTP from the host (the host reaches every pod address directly)."""
    req = urllib.request.Request(url, method=method, data=data)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return str(resp.read().decode())
    except urllib.error.HTTPError as e:
        raise AssertionError(f"{method} {url}: HTTP {e.code}: {e.read().decode()}") from e


def pod_exec(namespace: str, pod: str, *cmd: str, container: str | None = None) -> str:
    """``kubectl exec`` a command in a pod's container and return its stdout."""
    args = ["exec", "-n", namespace, pod] + (["-c", container] if container else [])
    return kubectl(*args, "--", *cmd)


def pod_ready(pod: Obj) -> bool:
    return any(
        c["type"] == "Ready" and c["status"] == "True"
        for c in pod.get("status", {}).get("conditions", [])
    )
