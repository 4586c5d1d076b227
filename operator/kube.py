"""The Kubernetes API as plain dicts, the shape ``readers`` and ``resources`` speak.

The official client only finds the credentials (kubeconfig or in-cluster service account, with
token refresh); requests are plain HTTP through ``requests``. Its typed models are skipped on
purpose: the builders produce dicts and the readers read dicts, so converting through
generated classes would only lose fields and add code.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import requests
from kubernetes import client, config

from .model import GROUP, PLURAL, VERSION

Obj = dict[str, Any]

MERGE = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"


class KubeError(Exception):
    """A request the API server refused; ``status`` is the HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status


# Where each kind lives: (API prefix, plural). Names as resources.KINDS and the pod-level kinds.
PATHS = {
    "pods": ("/api/v1", "pods"),
    "persistentvolumeclaims": ("/api/v1", "persistentvolumeclaims"),
    "services": ("/api/v1", "services"),
    "events": ("/api/v1", "events"),
    "statefulsets": ("/apis/apps/v1", "statefulsets"),
    "poddisruptionbudgets": ("/apis/policy/v1", "poddisruptionbudgets"),
    "raftclusters": (f"/apis/{GROUP}/{VERSION}", PLURAL),
}


def path(kind: str, namespace: str, name: str | None = None, sub: str | None = None) -> str:
    prefix, plural = PATHS[kind]
    out = f"{prefix}/namespaces/{quote(namespace)}/{plural}"
    if name is not None:
        out += f"/{quote(name)}"
    if sub is not None:
        out += f"/{sub}"
    return out


class Kube:
    """A thin REST client: every call takes and returns JSON-shaped dicts."""

    def __init__(self, cfg: Any = None) -> None:
        self.cfg = cfg if cfg is not None else _configuration()
        self.session = requests.Session()
        # Only the kubeconfig decides: REQUESTS_CA_BUNDLE or a proxy from the environment
        # would otherwise override the cluster's own CA.
        self.session.trust_env = False
        self.session.verify = self.cfg.ssl_ca_cert if self.cfg.verify_ssl else False
        if self.cfg.cert_file:
            self.session.cert = (self.cfg.cert_file, self.cfg.key_file)

    def request(
        self,
        method: str,
        url: str,
        body: Any = None,
        query: Mapping[str, str] | None = None,
        content_type: str = "application/json",
    ) -> Obj:
        headers = {"Accept": "application/json", "Content-Type": content_type}
        # The client's loaders keep a token (kubeconfig or service account) under
        # "BearerToken"; older ones used "authorization", which the alias still finds.
        token = self.cfg.get_api_key_with_prefix("BearerToken", alias="authorization")
        if token:
            headers["Authorization"] = token
        resp = self.session.request(
            method,
            self.cfg.host.rstrip("/") + url,
            params=dict(query or {}),
            data=None if body is None else json.dumps(body),
            headers=headers,
            timeout=30,
        )
        if resp.status_code >= 300:
            raise KubeError(resp.status_code, _reason(resp))
        result: Obj = resp.json() if resp.content else {}
        return result

    def get(self, kind: str, namespace: str, name: str) -> Obj | None:
        try:
            return self.request("GET", path(kind, namespace, name))
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise

    def list(self, kind: str, namespace: str, selector: str) -> list[Obj]:
        out = self.request("GET", path(kind, namespace), query={"labelSelector": selector})
        items: list[Obj] = out.get("items") or []
        return items

    def create(self, kind: str, namespace: str, obj: Mapping[str, Any]) -> Obj:
        return self.request("POST", path(kind, namespace), body=obj)

    def patch(
        self,
        kind: str,
        namespace: str,
        name: str,
        patch: Any,
        content_type: str = MERGE,
        sub: str | None = None,
    ) -> Obj:
        return self.request(
            "PATCH", path(kind, namespace, name, sub), body=patch, content_type=content_type
        )

    def delete(self, kind: str, namespace: str, name: str) -> None:
        """Delete; an object that is already gone is not an error."""
        try:
            self.request("DELETE", path(kind, namespace, name))
        except KubeError as exc:
            if exc.status != 404:
                raise


def _configuration() -> Any:
    cfg = client.Configuration()
    loader: Any = config  # partly typed upstream; only these two calls are used
    try:
        loader.load_incluster_config(client_configuration=cfg)
    except config.ConfigException:
        loader.load_kube_config(client_configuration=cfg)
    return cfg


def _reason(resp: requests.Response) -> str:
    try:
        return str(resp.json().get("message") or resp.reason)
    except ValueError:
        return resp.text or str(resp.reason)
