"""Where the ``flotilla`` command finds members: flags, ``local up``'s record, Kubernetes.

The Kubernetes path is exercised against a real HTTP server speaking the few API paths it
reads, through a real kubeconfig file and the Kubernetes client's own loader.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from flotilla.node.ctl.endpoints import EndpointError, from_pods, resolve


def pod(name: str, ip: str | None, phase: str = "Running", deleting: bool = False) -> Any:
    meta: dict[str, Any] = {"name": name}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return {"metadata": meta, "status": {"podIP": ip, "phase": phase}}


def test_running_pods_by_ordinal_with_ipv6_bracketed() -> None:
    pods = [
        pod("db-10", "10.0.0.10"),
        pod("db-2", "10.0.0.2"),
        pod("db-0", "fd00::1"),
        pod("db-1", None, phase="Pending"),
        pod("db-3", "10.0.0.3", deleting=True),
    ]
    assert from_pods(pods) == ["[fd00::1]:2379", "10.0.0.2:2379", "10.0.0.10:2379"]


def test_flags_then_local_record_then_default(tmp_path: Path) -> None:
    assert resolve("http://a:1, b:2/", None, "ns", None, tmp_path) == ["a:1", "b:2"]
    assert resolve(None, None, "ns", None, tmp_path) == ["127.0.0.1:2379"]
    (tmp_path / "endpoints.json").write_text(json.dumps(["http://127.0.0.1:2379", "http://x:3"]))
    assert resolve(None, None, "ns", None, tmp_path) == ["127.0.0.1:2379", "x:3"]


class _Api(BaseHTTPRequestHandler):
    objects: dict[str, Any] = {}
    seen: list[tuple[str, str | None]] = []

    def do_GET(self) -> None:
        self.seen.append((self.path, self.headers.get("Authorization")))
        path = self.path.split("?", 1)[0]
        body = self.objects.get(path)
        if body is None:
            self.send_response(404)
            body = {"kind": "Status", "message": f"{path} not found", "code": 404}
        else:
            self.send_response(200)
        data = json.dumps(body).encode()
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def kubeconfig(tmp_path: Path) -> Iterator[Path]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Api)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    cfg = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "k", "cluster": {"server": f"http://127.0.0.1:{server.server_port}"}}
        ],
        "users": [{"name": "u", "user": {"token": "s3cret"}}],
        "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}],
        "current-context": "c",
    }
    path = tmp_path / "kubeconfig"
    path.write_text(json.dumps(cfg))  # JSON is YAML
    try:
        yield path
    finally:
        server.shutdown()
        server.server_close()


def test_pods_of_a_raftcluster_through_a_kubeconfig(kubeconfig: Path) -> None:
    _Api.objects = {
        "/apis/flotilla.dev/v1alpha1/namespaces/prod/raftclusters/db": {"kind": "RaftCluster"},
        "/api/v1/namespaces/prod/pods": {
            "items": [pod("db-1", "10.1.0.5"), pod("db-0", "10.1.0.4")]
        },
    }
    _Api.seen = []
    assert resolve(None, str(kubeconfig), "prod", "db", Path("/nonexistent")) == [
        "10.1.0.4:2379",
        "10.1.0.5:2379",
    ]
    pods_call = next(p for p, _ in _Api.seen if p.startswith("/api/v1/namespaces/prod/pods"))
    assert "labelSelector=app.kubernetes.io%2Fname%3Dflotilla" in pods_call
    assert "app.kubernetes.io%2Finstance%3Ddb" in pods_call
    assert [auth for _, auth in _Api.seen] == ["Bearer s3cret"] * 2


def test_a_missing_raftcluster_is_a_clear_error(kubeconfig: Path) -> None:
    _Api.objects = {}
    with pytest.raises(EndpointError, match="no RaftCluster 'db' in namespace 'prod'"):
        resolve(None, str(kubeconfig), "prod", "db", Path("/nonexistent"))
