"""Turn a pod spec into what a process needs: environment and volume mounts.

Kept apart from the process handling in ``pods.py`` because this half talks to the
API (ConfigMaps, Secrets, PVCs, tokens) and the other half only to the kernel.
"""

from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import Any

from .api import Api, ApiError

Obj = dict[str, Any]
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_VAR_REF = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


class NotReadyYet(Exception):
    """Something the pod needs does not exist yet (e.g. an unbound PVC): retry later."""


def expand(value: str, env: dict[str, str]) -> str:
    """Kubernetes ``$(VAR)`` expansion: defined variables expand, ``$$`` escapes."""

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group(1)
        return env.get(name, m.group(0))

    return _VAR_REF.sub(sub, value)


def field_ref(pod: Obj, path: str) -> str:
    """Downward API: the value of ``fieldPath`` for this pod."""
    meta, spec, status = pod["metadata"], pod["spec"], pod.get("status", {})
    m = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
    if m:
        return str(meta.get(m.group(1), {}).get(m.group(2), ""))
    simple = {
        "metadata.name": meta.get("name"),
        "metadata.namespace": meta.get("namespace"),
        "metadata.uid": meta.get("uid"),
        "spec.nodeName": spec.get("nodeName"),
        "spec.serviceAccountName": spec.get("serviceAccountName"),
        "status.podIP": status.get("podIP"),
        "status.hostIP": status.get("hostIP"),
        "status.podIPs": ",".join(i["ip"] for i in status.get("podIPs", [])),
        "status.hostIPs": ",".join(i["ip"] for i in status.get("hostIPs", [])),
    }
    if path in ("metadata.labels", "metadata.annotations"):
        items = meta.get(path.split(".")[1], {})
        return "\n".join(f'{k}="{v}"' for k, v in sorted(items.items()))
    return str(simple.get(path) or "")


class Resolver:
    """Looks up ConfigMaps/Secrets of one namespace, caching for one pod start."""

    def __init__(self, api: Api, namespace: str) -> None:
        self.api = api
        self.ns = namespace
        self._cache: dict[tuple[str, str], Obj | None] = {}

    def _get(self, kind: str, name: str) -> Obj | None:
        key = (kind, name)
        if key not in self._cache:
            self._cache[key] = self.api.get_or_none(f"/api/v1/namespaces/{self.ns}/{kind}/{name}")
        return self._cache[key]

    def data(self, kind: str, name: str, optional: bool) -> dict[str, bytes]:
        """All keys of a ConfigMap (kind=configmaps) or Secret (kind=secrets) as bytes."""
        obj = self._get(kind, name)
        if obj is None:
            if optional:
                return {}
            raise NotReadyYet(f"{kind[:-1]} {self.ns}/{name} not found")
        out: dict[str, bytes] = {}
        if kind == "secrets":
            for k, v in obj.get("data", {}).items():
                out[k] = base64.b64decode(v)
            for k, v in obj.get("stringData", {}).items():
                out[k] = v.encode()
        else:
            for k, v in obj.get("data", {}).items():
                out[k] = v.encode()
            for k, v in obj.get("binaryData", {}).items():
                out[k] = base64.b64decode(v)
        return out


def container_env(
    pod: Obj, container: Obj, resolver: Resolver, base: dict[str, str]
) -> dict[str, str]:
    """The environment of ``container``: ``base`` (image env), envFrom, then env."""
    env = dict(base)
    for src in container.get("envFrom", []):
        prefix = src.get("prefix", "")
        if "configMapRef" in src:
            ref = src["configMapRef"]
            data = resolver.data("configmaps", ref["name"], ref.get("optional", False))
        else:
            ref = src["secretRef"]
            data = resolver.data("secrets", ref["name"], ref.get("optional", False))
        env.update({prefix + k: v.decode() for k, v in data.items()})
    for var in container.get("env", []):
        name = var["name"]
        if "value" in var:
            env[name] = expand(var["value"], env)
            continue
        src = var.get("valueFrom", {})
        if "fieldRef" in src:
            env[name] = field_ref(pod, src["fieldRef"]["fieldPath"])
        elif "configMapKeyRef" in src or "secretKeyRef" in src:
            kind = "configmaps" if "configMapKeyRef" in src else "secrets"
            ref = src.get("configMapKeyRef") or src["secretKeyRef"]
            data = resolver.data(kind, ref["name"], ref.get("optional", False))
            if ref["key"] in data:
                env[name] = data[ref["key"]].decode()
            elif not ref.get("optional", False):
                raise NotReadyYet(f"key {ref['key']} missing in {kind[:-1]} {ref['name']}")
        elif "resourceFieldRef" in src:
            res = src["resourceFieldRef"]["resource"]  # e.g. limits.memory
            section, _, rname = res.partition(".")
            env[name] = str(container.get("resources", {}).get(section, {}).get(rname, "0"))
        else:
            env[name] = ""
    return env


def _write_files(target: Path, files: dict[str, bytes], mode: int = 0o644) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for rel, content in files.items():
        p = target / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(content)
        p.chmod(mode)


def _select(data: dict[str, bytes], items: list[Obj] | None) -> dict[str, bytes]:
    if not items:
        return data
    return {i["path"]: data[i["key"]] for i in items if i["key"] in data}


def _token(api: Api, pod: Obj, src: Obj) -> bytes:
    meta = pod["metadata"]
    sa = pod["spec"].get("serviceAccountName", "default")
    body = {
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenRequest",
        "spec": {
            "audiences": [src["audience"]] if src.get("audience") else None,
            "expirationSeconds": src.get("expirationSeconds", 3607),
            "boundObjectRef": {
                "apiVersion": "v1",
                "kind": "Pod",
                "name": meta["name"],
                "uid": meta["uid"],
            },
        },
    }
    try:
        resp = api.create(
            f"/api/v1/namespaces/{meta['namespace']}/serviceaccounts/{sa}/token", body
        )
    except ApiError as e:
        raise NotReadyYet(f"token for service account {sa}: {e}") from e
    return str(resp["status"]["token"]).encode()


def prepare_volumes(api: Api, pod: Obj, pod_dir: Path, resolver: Resolver) -> dict[str, Path]:
    """Materialise every volume of the pod as a host path; returns name -> path.

    PVCs resolve to their bound PV's host directory; config-like volumes are written
    once at start (no live updates: enough for tests, and documented).
    """
    ns = pod["metadata"]["namespace"]
    out: dict[str, Path] = {}
    for vol in pod["spec"].get("volumes", []):
        name = vol["name"]
        local = pod_dir / "volumes" / name
        if "persistentVolumeClaim" in vol:
            claim = vol["persistentVolumeClaim"]["claimName"]
            pvc = api.get_or_none(f"/api/v1/namespaces/{ns}/persistentvolumeclaims/{claim}")
            if pvc is None or pvc.get("status", {}).get("phase") != "Bound":
                raise NotReadyYet(f"persistentvolumeclaim {claim} is not bound yet")
            pv = api.get(f"/api/v1/persistentvolumes/{pvc['spec']['volumeName']}")
            spec = pv["spec"]
            path = (spec.get("hostPath") or spec.get("local") or {}).get("path")
            if not path:
                raise NotReadyYet(f"persistentvolume {pv['metadata']['name']} has no host path")
            out[name] = Path(path)
        elif "hostPath" in vol:
            p = Path(vol["hostPath"]["path"])
            if vol["hostPath"].get("type") == "DirectoryOrCreate":
                p.mkdir(parents=True, exist_ok=True)
            out[name] = p
        elif "emptyDir" in vol:
            local.mkdir(parents=True, exist_ok=True)
            out[name] = local
        elif "configMap" in vol or "secret" in vol:
            kind = "configmaps" if "configMap" in vol else "secrets"
            src = vol.get("configMap") or vol["secret"]
            ref = src.get("name") or src.get("secretName")
            data = resolver.data(kind, ref, src.get("optional", False))
            _write_files(local, _select(data, src.get("items")), src.get("defaultMode", 0o644))
            out[name] = local
        elif "downwardAPI" in vol:
            files = {
                i["path"]: field_ref(pod, i["fieldRef"]["fieldPath"]).encode()
                for i in vol["downwardAPI"].get("items", [])
                if "fieldRef" in i
            }
            _write_files(local, files)
            out[name] = local
        elif "projected" in vol:
            projected: dict[str, bytes] = {}
            for src in vol["projected"].get("sources", []):
                if "serviceAccountToken" in src:
                    projected[src["serviceAccountToken"]["path"]] = _token(
                        api, pod, src["serviceAccountToken"]
                    )
                elif "configMap" in src or "secret" in src:
                    kind = "configmaps" if "configMap" in src else "secrets"
                    s = src.get("configMap") or src["secret"]
                    projected.update(
                        _select(
                            resolver.data(kind, s["name"], s.get("optional", False)), s.get("items")
                        )
                    )
                elif "downwardAPI" in src:
                    for i in src["downwardAPI"].get("items", []):
                        if "fieldRef" in i:
                            projected[i["path"]] = field_ref(
                                pod, i["fieldRef"]["fieldPath"]
                            ).encode()
            _write_files(local, projected)
            out[name] = local
        # Other volume types are ignored: there is nothing local to back them.
    return out


def mounts_for(container: Obj, volumes: dict[str, Path]) -> list[Obj]:
    """The container's volumeMounts as launcher mount entries (source, target, readOnly)."""
    mounts = []
    for m in container.get("volumeMounts", []):
        if m["name"] not in volumes:
            continue
        source = volumes[m["name"]]
        if m.get("subPath"):
            source = source / m["subPath"]
            if not source.exists():
                source.mkdir(parents=True, exist_ok=True)
        mounts.append(
            {"source": str(source), "target": m["mountPath"], "readOnly": m.get("readOnly", False)}
        )
    return mounts
