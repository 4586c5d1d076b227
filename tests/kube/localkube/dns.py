"""Cluster DNS as hosts files.

Without a DNS server, every pod's ``/etc/hosts`` carries the records cluster DNS
would serve for headless Services: ``<hostname>.<subdomain>.<ns>.svc.<domain>`` for
each pod whose ``spec.subdomain`` names a headless Service in its namespace, and the
Service name itself with one line per endpoint. Like real DNS, only ready pods are
published unless the Service sets ``publishNotReadyAddresses``. Short forms (without
the domain, and without the namespace inside the same namespace) stand in for the
resolver search path.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

Obj = dict[str, Any]


def _ready(pod: Obj) -> bool:
    for cond in pod.get("status", {}).get("conditions", []):
        if cond.get("type") == "Ready":
            return bool(cond.get("status") == "True")
    return False


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def records(
    pods: Iterable[Obj], services: Iterable[Obj], domain: str
) -> list[tuple[str, str, list[str]]]:
    """(namespace, ip, [fully qualified, ..., namespace-relative names]) for every record."""
    headless = {
        (s["metadata"]["namespace"], s["metadata"]["name"]): s
        for s in services
        if s.get("spec", {}).get("clusterIP") == "None"
    }
    out: list[tuple[str, str, list[str]]] = []
    for pod in pods:
        meta, spec = pod["metadata"], pod["spec"]
        ip = pod.get("status", {}).get("podIP")
        if not ip or meta.get("deletionTimestamp"):
            continue
        ns = meta["namespace"]
        host = spec.get("hostname") or meta["name"]
        for (sns, sname), svc in headless.items():
            if sns != ns:
                continue
            if not (_ready(pod) or svc["spec"].get("publishNotReadyAddresses")):
                continue
            labels = meta.get("labels", {})
            if spec.get("subdomain") == sname:
                base = f"{host}.{sname}.{ns}"
                out.append(
                    (ns, ip, [f"{base}.svc.{domain}", f"{base}.svc", base, f"{host}.{sname}"])
                )
            if _selects(svc["spec"].get("selector", {}), labels):
                base = f"{sname}.{ns}"
                out.append((ns, ip, [f"{base}.svc.{domain}", f"{base}.svc", base, sname]))
    return out


def hosts_lines(recs: list[tuple[str, str, list[str]]], namespace: str) -> list[str]:
    """Hosts-file lines as seen from a pod in ``namespace``.

    Names relative to a namespace (the last one of each record) resolve only inside it.
    """
    lines = []
    for ns, ip, names in sorted(recs):
        visible = names if ns == namespace else names[:-1]
        lines.append(f"{ip}\t{' '.join(visible)}")
    return lines
