"""The kubelet's HTTPS endpoint, reduced to ``kubectl logs`` and ``kubectl exec``.

The apiserver serves those two by calling the node's kubelet port
(``status.daemonEndpoints``): ``/containerLogs/<ns>/<pod>/<c>`` and
``/exec/<ns>/<pod>/<c>?command=...``. Each local node listens on its own loopback
port; only clients with a certificate from the cluster CA (the apiserver) get in.
Exec runs the command in the container's network, UTS and mount namespaces with the
container's environment and streams it over a WebSocket (``v5.channel.k8s.io``; the
apiserver runs with TranslateStreamCloseWebsocketRequests off so it relays that
WebSocket instead of converting it to SPDY). No TTY, attach or port-forward.
"""

from __future__ import annotations

import contextlib
import json
import ssl
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO, Any
from urllib.parse import parse_qs, urlparse

from . import websocket as ws
from .config import Config
from .pki import Pki

EXEC_PROTOCOLS = ("v5.channel.k8s.io", "v4.channel.k8s.io")
STDIN, STDOUT, STDERR, ERROR, CLOSE = 0, 1, 2, 3, 255


@dataclass
class Target:
    """Where a pod's things are: its log directory, and a running container's process."""

    log_dir: Path
    running: Callable[[], bool]
    pids: dict[str, int]  # container name -> pid of its running process
    envs: dict[str, dict[str, str]]  # container name -> environment


Lookup = Callable[[str, str], Target | None]


def _tail(data: bytes, lines: int) -> bytes:
    if lines < 0:
        return data
    parts = data.splitlines(keepends=True)
    return b"".join(parts[-lines:]) if lines else b""


def exit_status(code: int) -> bytes:
    """The metav1.Status kubectl expects on the error stream when the command ends."""
    status: dict[str, Any] = {"metadata": {}, "status": "Success"}
    if code != 0:
        status = {
            "metadata": {},
            "status": "Failure",
            "message": f"command terminated with non-zero exit code: {code}",
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]},
        }
    return json.dumps(status).encode()


def make_handler(lookup: Lookup) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            url = urlparse(self.path)
            parts = url.path.strip("/").split("/")
            query = parse_qs(url.query)
            if url.path == "/healthz":
                self._plain(200, b"ok")
            elif len(parts) == 4 and parts[0] == "containerLogs":
                self._logs(parts[1], parts[2], parts[3], query)
            elif len(parts) == 4 and parts[0] == "exec":
                self._exec(parts[1], parts[2], parts[3], query)
            else:
                self._plain(404, b"the local kubelet serves only /containerLogs and /exec")

        do_POST = do_GET

        # -- logs ----------------------------------------------------------------------

        def _logs(self, ns: str, pod: str, container: str, query: dict[str, list[str]]) -> None:
            target = lookup(ns, pod)
            log = target.log_dir / f"{container}.log" if target else None
            if target is None or log is None or not log.exists():
                self._plain(404, f"no logs for {ns}/{pod}/{container}".encode())
                return
            follow = query.get("follow", ["false"])[0] == "true"
            tail = int(query.get("tailLines", ["-1"])[0])
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            with open(log, "rb") as f:
                self._chunk(_tail(f.read(), tail))
                while follow and target.running():
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

        # -- exec ----------------------------------------------------------------------

        def _exec(self, ns: str, pod: str, container: str, query: dict[str, list[str]]) -> None:
            target = lookup(ns, pod)
            pid = target.pids.get(container) if target else None
            if pid is not None and not _in_own_namespaces(pid):
                pid = None
            if target is None or pid is None:
                self._plain(404, f"container {container} of {ns}/{pod} is not running".encode())
                return
            offered = [p.strip() for p in self.headers.get("Sec-WebSocket-Protocol", "").split(",")]
            protocol = next((p for p in EXEC_PROTOCOLS if p in offered), None)
            key = self.headers.get("Sec-WebSocket-Key")
            if protocol is None or key is None:
                self._plain(400, b"exec needs a WebSocket with v5.channel.k8s.io or v4")
                return
            command = query.get("command", [])
            stdin = "1" in query.get("input", []) + query.get("stdin", [])
            self.send_response(101)
            self.send_header("Upgrade", "websocket")
            self.send_header("Connection", "Upgrade")
            self.send_header("Sec-WebSocket-Accept", ws.accept_key(key))
            self.send_header("Sec-WebSocket-Protocol", protocol)
            self.end_headers()
            self.close_connection = True
            writer = ws.Writer(self.wfile)  # type: ignore[arg-type]
            argv = ["nsenter", "-t", str(pid), "-n", "-u", "-m", "--", *command]
            try:
                proc = subprocess.Popen(
                    argv,
                    stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    env=target.envs.get(container, {}),
                )
            except OSError as e:
                writer.channel(ERROR, json.dumps({"status": "Failure", "message": str(e)}).encode())
                writer.close()
                return
            if stdin:
                threading.Thread(target=self._feed_stdin, args=(proc, writer), daemon=True).start()
            pumps = [
                threading.Thread(target=self._pump, args=(STDOUT, proc.stdout, writer)),
                threading.Thread(target=self._pump, args=(STDERR, proc.stderr, writer)),
            ]
            for t in pumps:
                t.start()
            for t in pumps:
                t.join()
            code = proc.wait()
            try:
                writer.channel(ERROR, exit_status(code))
                writer.close()
            except OSError:
                pass

        def _pump(self, stream: int, pipe: IO[bytes] | None, writer: ws.Writer) -> None:
            if pipe is None:
                return
            try:
                while data := pipe.read1(32768):  # type: ignore[attr-defined]
                    writer.channel(stream, data)
            except OSError:
                pass

        def _feed_stdin(self, proc: subprocess.Popen[bytes], writer: ws.Writer) -> None:
            """Client messages: stdin data, a v5 close of stdin, pings, or the end."""
            assert proc.stdin is not None
            try:
                while True:
                    opcode, payload = ws.read_frame(self.rfile)  # type: ignore[arg-type]
                    if opcode == ws.OP_CLOSE:
                        break
                    if opcode == ws.OP_PING:
                        writer.frame(ws.OP_PONG, payload)
                    elif opcode == ws.OP_BINARY and payload[:1] == bytes([STDIN]):
                        proc.stdin.write(payload[1:])
                        proc.stdin.flush()
                    elif opcode == ws.OP_BINARY and payload[:2] == bytes([CLOSE, STDIN]):
                        break
            except (EOFError, OSError):
                pass
            finally:
                with contextlib.suppress(OSError):
                    proc.stdin.close()

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


def _in_own_namespaces(pid: int, wait: float = 5.0) -> bool:
    """Has the container's process finished setting itself up (hostname, mounts)?

    A container's process starts as ``ip netns exec NS unshare --uts -- launcher``, which
    sets the hostname and mounts and then execs the container's program: for a moment after
    the pod is reported running it still has the host's hostname. Exec into it then would
    see the host's, so wait (briefly) until the launcher has handed over.
    """
    import os
    import time

    deadline = time.monotonic() + wait
    while True:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            return False
        first = os.path.basename(argv[0]) if argv and argv[0] else b""
        if first not in (b"ip", b"unshare") and not any(b"launcher" in a for a in argv):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
