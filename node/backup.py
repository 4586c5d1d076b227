"""The backup file of ``etcdctl snapshot save``, as Flotilla writes and restores it.

etcdctl checks what it saved: the stream must end with a SHA-256 of everything before it,
and everything before it must be a whole number of 512-byte blocks (bbolt files are). So the
backup is: an 8-byte length, the state snapshot (see ``flotilla.node.kv.state``), zero
padding to a 512-byte boundary, then the SHA-256 of all that.
"""

from __future__ import annotations

import hashlib
import struct

BLOCK = 512
_LEN = struct.Struct(">Q")


class BackupCorrupt(Exception):
    """A backup file failed its checksum or framing."""


def encode(state: bytes) -> bytes:
    body = _LEN.pack(len(state)) + state
    body += b"\0" * (-len(body) % BLOCK)
    return body + hashlib.sha256(body).digest()


def decode(blob: bytes) -> bytes:
    if len(blob) % BLOCK != 32 or len(blob) < BLOCK + 32:
        raise BackupCorrupt(f"not a Flotilla backup ({len(blob)} bytes)")
    body, digest = blob[:-32], blob[-32:]
    if hashlib.sha256(body).digest() != digest:
        raise BackupCorrupt("backup checksum mismatch: the file is damaged")
    (n,) = _LEN.unpack_from(body, 0)
    if _LEN.size + n > len(body):
        raise BackupCorrupt("backup length field is beyond the end of the file")
    return body[_LEN.size : _LEN.size + n]
