"""The ``flotilla-test/httpserver`` image: a tiny HTTP server for cluster tests.

Stdlib only, so it runs with any Python. Endpoints:

- ``GET /healthz``           liveness: always 200
- ``GET /ready``             readiness: 200, or 503 after ``POST /ready/off``
- ``POST /ready/on|off``     flip readiness
- ``GET /info``              JSON: hostname, pod name/ip/namespace, image tag, pid
- ``GET /fetch?url=U``       fetch U from inside the pod (proves DNS + pod-to-pod)
- ``GET|PUT /data/NAME``     read/write a file under ``$DATA_DIR`` (a PVC in tests)

Listens on ``$PORT`` (default 8080); exits cleanly on SIGTERM. With ``$GRPC_PORT``
set (and grpcio installed) it also serves grpc.health.v1 Check, following readiness.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

READY = threading.Event()
READY.set()


class Handler(BaseHTTPRequestHandler):
    def _send(self, code: int, body: bytes | str, ctype: str = "text/plain") -> None:
        data = body.encode() if isinstance(body, str) else body
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _data_path(self) -> Path | None:
        name = self.path[len("/data/") :]
        if not name or "/" in name or name.startswith("."):
            return None
        return Path(os.environ.get("DATA_DIR", "/data")) / name

    def do_GET(self) -> None:
        url = urlparse(self.path)
        if url.path == "/healthz":
            self._send(200, "ok")
        elif url.path == "/ready":
            self._send(200 if READY.is_set() else 503, "ready" if READY.is_set() else "not ready")
        elif url.path == "/info":
            info = {
                "hostname": socket.gethostname(),
                "pod_name": os.environ.get("POD_NAME"),
                "pod_ip": os.environ.get("POD_IP"),
                "namespace": os.environ.get("POD_NAMESPACE"),
                "image_tag": os.environ.get("IMAGE_TAG"),
                "code_version": os.environ.get("CODE_VERSION"),
                "pid": os.getpid(),
                "argv": sys.argv,
            }
            self._send(200, json.dumps(info), "application/json")
        elif url.path == "/fetch":
            target = parse_qs(url.query).get("url", [""])[0]
            try:
                with urllib.request.urlopen(target, timeout=5) as resp:
                    self._send(200, resp.read())
            except OSError as e:
                self._send(502, f"fetch {target} failed: {e}")
        elif url.path.startswith("/data/"):
            path = self._data_path()
            if path is None or not path.exists():
                self._send(404, "no such file")
            else:
                self._send(200, path.read_bytes())
        else:
            self._send(404, "not found")

    def do_PUT(self) -> None:
        path = self._data_path()
        if path is None:
            self._send(400, "bad name")
            return
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body)
        self._send(201, "written")

    def do_POST(self) -> None:
        if self.path == "/ready/on":
            READY.set()
        elif self.path == "/ready/off":
            READY.clear()
        else:
            self._send(404, "not found")
            return
        self._send(200, "ok")

    def log_message(self, format: str, *args: object) -> None:
        sys.stderr.write(f"{self.address_string()} {format % args}\n")


def serve_grpc_health(port: int) -> object:
    """grpc.health.v1.Health/Check with hand-encoded messages (SERVING=1, NOT_SERVING=2)."""
    from concurrent.futures import ThreadPoolExecutor

    import grpc

    def check(request: bytes, context: object) -> bytes:
        return b"\x08\x01" if READY.is_set() else b"\x08\x02"

    server = grpc.server(ThreadPoolExecutor(max_workers=4))
    handler = grpc.method_handlers_generic_handler(
        "grpc.health.v1.Health", {"Check": grpc.unary_unary_rpc_method_handler(check)}
    )
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"0.0.0.0:{port}")
    server.start()
    return server


def main() -> None:
    server = ThreadingHTTPServer(("0.0.0.0", int(os.environ.get("PORT", "8080"))), Handler)
    server.daemon_threads = True

    def on_term(signum: int, frame: object) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, on_term)
    grpc_server = None
    if os.environ.get("GRPC_PORT"):
        grpc_server = serve_grpc_health(int(os.environ["GRPC_PORT"]))
    print(f"listening on {server.server_address}", flush=True)
    server.serve_forever()
    if grpc_server is not None:
        grpc_server.stop(0)  # type: ignore[attr-defined]
    print("terminated", flush=True)


if __name__ == "__main__":
    main()
