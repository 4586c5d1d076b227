"""The metrics address: ``/metrics`` (Prometheus text), ``/health``, ``/livez`` and ``/readyz``.

A tiny HTTP/1.1 responder on asyncio streams: four read-only endpoints don't justify a web
framework, and probes must keep answering even when the member is busy.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from urllib.parse import urlsplit

Route = Callable[[], tuple[int, str, bytes]]


class HttpEndpoints:
    def __init__(self, routes: dict[str, Route]) -> None:
        self.routes = routes
        self.servers: list[asyncio.Server] = []

    async def start(self, urls: tuple[str, ...]) -> None:
        for url in urls:
            parts = urlsplit(url)
            server = await asyncio.start_server(self._handle, parts.hostname, parts.port)
            self.servers.append(server)

    async def stop(self) -> None:
        for s in self.servers:
            s.close()
        for s in self.servers:
            await s.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readline(), 5)
            while (await asyncio.wait_for(reader.readline(), 5)) not in (b"\r\n", b"\n", b""):
                pass
            parts = request.decode("latin-1").split()
            path = urlsplit(parts[1]).path if len(parts) >= 2 else "/"
            route = self.routes.get(path)
            if route is None:
                status, ctype, body = 404, "text/plain", b"not found\n"
            else:
                status, ctype, body = route()
            reason = {200: "OK", 404: "Not Found", 503: "Service Unavailable"}.get(status, "")
            head = (
                f"HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            )
            writer.write(head.encode() + body)
            await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()


def health_route(has_leader: Callable[[], bool]) -> Route:
    def route() -> tuple[int, str, bytes]:
        ok = has_leader()
        body = json.dumps({"health": str(ok).lower(), "reason": "" if ok else "no leader"})
        return (200 if ok else 503), "application/json", body.encode()

    return route


def live_route(stalled_for: Callable[[], float], limit: float) -> Route:
    """Alive while the driver loop keeps turning, whatever the cluster's state.

    A liveness probe restarts the process when it fails; that must cure something. A member
    without a leader (lost quorum, a partition) is not cured by a restart, and restarting
    every member of a cluster that lost quorum makes things worse, so this route never looks
    at the leader: it only fails when the loop itself has stopped turning (or, since it is
    served by the same event loop, does not answer at all).
    """

    def route() -> tuple[int, str, bytes]:
        stalled = stalled_for()
        if stalled > limit:
            return 503, "text/plain", f"driver loop stalled for {stalled:.1f}s\n".encode()
        return 200, "text/plain", b"ok\n"

    return route


def ready_route(is_ready: Callable[[], tuple[bool, str]]) -> Route:
    def route() -> tuple[int, str, bytes]:
        ok, reason = is_ready()
        return (200 if ok else 503), "text/plain", (b"ok\n" if ok else reason.encode() + b"\n")

    return route
