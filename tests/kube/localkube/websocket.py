"""Just enough WebSocket (RFC 6455) for the kubelet's exec stream, server side.

The apiserver relays ``kubectl exec`` to the kubelet as a WebSocket speaking the
``v5.channel.k8s.io`` subprotocol: binary messages whose first byte is a stream
(0 stdin, 1 stdout, 2 stderr, 3 error/status, 4 resize, 255 close-a-stream).
"""

from __future__ import annotations

import base64
import hashlib
import struct
import threading
from typing import BinaryIO

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0, 1, 2, 8, 9, 10


def accept_key(key: str) -> str:
    """The Sec-WebSocket-Accept answer to a client's Sec-WebSocket-Key."""
    return base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()


def _read_exact(rfile: BinaryIO, n: int) -> bytes:
    data = rfile.read(n)
    if data is None or len(data) < n:
        raise EOFError("websocket closed")
    return data


def read_frame(rfile: BinaryIO) -> tuple[int, bytes]:
    """One frame from the client: (opcode, unmasked payload). Raises EOFError at the end."""
    b1, b2 = _read_exact(rfile, 2)
    length = b2 & 0x7F
    if length == 126:
        (length,) = struct.unpack(">H", _read_exact(rfile, 2))
    elif length == 127:
        (length,) = struct.unpack(">Q", _read_exact(rfile, 8))
    mask = _read_exact(rfile, 4) if b2 & 0x80 else b""
    payload = _read_exact(rfile, length) if length else b""
    if mask:
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return b1 & 0x0F, payload


class Writer:
    """Thread-safe frame writer (stdout and stderr are pumped by different threads)."""

    def __init__(self, wfile: BinaryIO) -> None:
        self.wfile = wfile
        self.lock = threading.Lock()

    def frame(self, opcode: int, payload: bytes) -> None:
        n = len(payload)
        if n < 126:
            header = bytes([0x80 | opcode, n])
        elif n < 1 << 16:
            header = bytes([0x80 | opcode, 126]) + struct.pack(">H", n)
        else:
            header = bytes([0x80 | opcode, 127]) + struct.pack(">Q", n)
        with self.lock:
            self.wfile.write(header + payload)
            self.wfile.flush()

    def channel(self, stream: int, data: bytes) -> None:
        self.frame(OP_BINARY, bytes([stream]) + data)

    def close(self) -> None:
        self.frame(OP_CLOSE, struct.pack(">H", 1000))
