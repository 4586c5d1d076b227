"""The kubelet's HTTPS endpoint, reduced to what ``kubectl logs`` needs.

``kubectl logs`` asks the apiserver, which calls ``/containerLogs/<ns>/<pod>/<c>`` on
the node's kubelet port (``status.daemonEndpoints``). Each local node listens on its
own loopback port and serves the container's log file. Only clients with a
certificate from the cluster CA (the apiserver) are accepted. exec, attach and
port-forward are not implemented.
"""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

from .config import Config
from .pki import Pki

# (namespace, pod name) -> (log directory of the pod, is the pod still running?)
Lookup = Callable[[str, str], tuple[Path, Callable[[], bool]] | None]


def _tail(data: bytes, lines: int) -> bytes:
    if lines < 0:
        return data
    parts = data.splitlines(keepends=True)
    return b"".join(parts[-lines:]) if lines else b""


def make_handler(lookup: Lookup) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            url = urlparse(self.path)
            parts = url.path.strip("/").split("/")
            if url.path == "/healthz":
                self._plain(200, b"ok")
                return
            if len(parts) != 4 or parts[0] != "containerLogs":
                self._plain(404, b"only /containerLogs is served by the local kubelet")
                return
            _, ns, pod, container = parts
            found = lookup(ns, pod)
            log = found[0] / f"{container}.log" if found else None
            if found is None or log is None or not log.exists():
                self._plain(404, f"no logs for {ns}/{pod}/{container}".encode())
                return
            query = parse_qs(url.query)
            follow = query.get("follow", ["false"])[0] == "true"
            tail = int(query.get("tailLines", ["-1"])[0])
            running = found[1]
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            with open(log, "rb") as f:
                self._chunk(_tail(f.read(), tail))
                while follow and running():
                    data = f.read()
                    if data:
                        self._chunk(data)
                    else:
                        time.sleep(0.2)
            self._chunk(b"")

        def _chunk(self, data: bytes) -> None:
            """Write one HTTP/1.1 chunk; an empty one ends the stream."""
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()

        def _plain(self, code: int, body: bytes) -> None:
            self.send_response(code)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


def serve(cfg: Config, port: int, lookup: Lookup) -> ThreadingHTTPServer:
    """Start the endpoint on 127.0.0.1:``port`` in a daemon thread."""
    pki = Pki(cfg.pki)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(pki.cert("apiserver")), str(pki.key("apiserver")))
    ctx.load_verify_locations(str(pki.ca_cert))
    ctx.verify_mode = ssl.CERT_REQUIRED
    server = ThreadingHTTPServer(("127.0.0.1", port), make_handler(lookup))
    server.daemon_threads = True
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, name=f"kubelet-{port}", daemon=True).start()
    return server
