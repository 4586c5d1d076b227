"""Let pods reach the apiserver, which listens on loopback only.

A pod's loopback is its own, so in-cluster clients (an operator deployed as a pod)
could not reach 127.0.0.1:<apiserver port>. This forwards plain TCP from the bridge
address (host-only, created by us) to the apiserver; TLS passes through untouched, and
the apiserver certificate names the bridge address. Pods learn it from the usual
``KUBERNETES_SERVICE_HOST``/``KUBERNETES_SERVICE_PORT`` variables.
"""

from __future__ import annotations

import contextlib
import socket
import threading


def _pump(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)


def _connection(client: socket.socket, target: tuple[str, int]) -> None:
    """Relay one connection both ways, then close both ends."""
    with client:
        try:
            upstream = socket.create_connection(target, timeout=5)
        except OSError:
            return
        with upstream:
            upstream.settimeout(None)
            back = threading.Thread(target=_pump, args=(upstream, client), daemon=True)
            back.start()
            _pump(client, upstream)
            back.join()


def _serve(listener: socket.socket, target: tuple[str, int]) -> None:
    while True:
        try:
            client, _ = listener.accept()
        except OSError:
            return
        threading.Thread(target=_connection, args=(client, target), daemon=True).start()


def start(listen: tuple[str, int], target: tuple[str, int]) -> socket.socket:
    """Forward ``listen`` to ``target`` in daemon threads; returns the listening socket."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(listen)
    listener.listen(128)
    threading.Thread(target=_serve, args=(listener, target), name="apiproxy", daemon=True).start()
    return listener
