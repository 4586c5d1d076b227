"""spec.tls end to end: the operator makes the certificates, the members speak only TLS, and
the real etcdctl writes with the client certificate from the operator's Secret.

The members' certificates name the Services' DNS names (and ``localhost``), not pod IPs, so
etcdctl reaches a member through a small TCP relay on ``localhost``: the TLS handshake is
end to end between etcdctl and the member, and the name it checks is one the certificate
holds.
"""

from __future__ import annotations

import base64
import contextlib
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.kube.kubectl import apply, get, get_or_none, pod_ready, wait_for
from tests.kube.test_operator import etcdctl, operated, operator  # noqa: F401 - fixtures

pytestmark = pytest.mark.kube

NAME = "secure"
SECRETS = [f"{NAME}-tls-{role}" for role in ("ca", "server", "peer", "client")]


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := src.recv(65536):
            dst.sendall(data)
    with contextlib.suppress(OSError):
        dst.shutdown(socket.SHUT_WR)


@contextlib.contextmanager
def relay(target: tuple[str, int]) -> Iterator[int]:
    """Forward connections on a localhost port to ``target``; yields the port."""
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def serve() -> None:
        with contextlib.suppress(OSError):
            while True:
                client, _ = server.accept()
                upstream = socket.create_connection(target, timeout=10)
                for a, b in ((client, upstream), (upstream, client)):
                    threading.Thread(target=_pipe, args=(a, b), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield port
    finally:
        server.close()


def ready_pods(ns: str) -> list[dict[str, object]]:
    items = get("pods", None, ns)["items"]
    return [p for p in items if p["metadata"]["name"].startswith(f"{NAME}-") and pod_ready(p)]


def test_a_tls_cluster_serves_etcdctl_with_the_operators_client_certificate(
    operated: str,  # noqa: F811 - the fixture
    tmp_path: Path,
) -> None:
    if shutil.which("etcdctl") is None:
        pytest.skip("etcdctl (Debian etcd-client) is not installed")
    ns = operated
    apply(
        [
            {
                "apiVersion": "flotilla.dev/v1alpha1",
                "kind": "RaftCluster",
                "metadata": {"name": NAME},
                "spec": {"replicas": 3, "version": "0.1.0", "tls": {}},
            }
        ],
        ns,
    )
    started = time.monotonic()
    wait_for("3 Ready TLS members", lambda: len(ready_pods(ns)) == 3 or None, timeout=120)

    def reported() -> bool | None:
        st = get("raftcluster", NAME, ns).get("status") or {}
        members = st.get("members") or []
        # The operator sees the members only through TLS with its client certificate.
        return (len(members) == 3 and all(m.get("healthy") for m in members)) or None

    wait_for("the operator to see 3 healthy members", reported, timeout=60)
    print(f"3 TLS members Ready and observed in {time.monotonic() - started:.1f}s")

    for secret in SECRETS:
        assert get_or_none("secret", secret, ns) is not None, f"{secret} was not created"
    client = get("secret", f"{NAME}-tls-client", ns)["data"]
    files = {}
    for key in ("tls.crt", "tls.key", "ca.crt"):
        files[key] = tmp_path / key
        files[key].write_bytes(base64.b64decode(client[key]))
    tls = [f"--cacert={files['ca.crt']}", f"--cert={files['tls.crt']}", f"--key={files['tls.key']}"]

    pod = ready_pods(ns)[0]
    ip = pod["status"]["podIP"]  # type: ignore[index]
    with relay((str(ip), 2379)) as port:
        ep = f"https://localhost:{port}"
        etcdctl(*tls, "put", "secret-greeting", "over tls", endpoint=ep)
        got = etcdctl(*tls, "get", "secret-greeting", "--print-value-only", endpoint=ep)
        assert got.strip() == "over tls"
        members = etcdctl(*tls, "member", "list", endpoint=ep)
        assert members.count("https://") == 6, members  # peer and client URLs
        with pytest.raises(AssertionError):  # no client certificate: refused
            etcdctl(f"--cacert={files['ca.crt']}", "get", "secret-greeting", endpoint=ep)
        with pytest.raises(AssertionError):  # plain text: refused
            etcdctl("get", "secret-greeting", endpoint=f"localhost:{port}")
