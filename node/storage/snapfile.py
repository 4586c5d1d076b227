"""The file format of a Raft snapshot: metadata header, opaque body, checksummed trailer.

Layout::

    magic b"FLOTSNAP" (8) | version (1) | header length (4) | header (sealed snapshot metadata)
    body (the application's snapshot bytes, any length)
    trailer: body length (8) | SHA-256 of the body (32)

The header has its own CRC so the metadata is trusted only if intact; the trailer goes last
so a body can be streamed to disk without knowing its length in advance. A truncated file
fails the length check, a flipped bit fails one of the two checksums.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable
from typing import BinaryIO, Final

from flotilla.node.raft.types import SnapshotMeta
from flotilla.node.storage.codec import RecordError, decode_meta, encode_meta

MAGIC: Final = b"FLOTSNAP"
VERSION: Final = 1
_HEAD = struct.Struct(">8sBI")
_TRAILER = struct.Struct(">Q32s")


def write(out: BinaryIO, meta: SnapshotMeta, body: bytes | Iterable[bytes]) -> int:
    """Write a snapshot to ``out``; returns the body length. The caller syncs and closes."""
    header = encode_meta(meta)
    out.write(_HEAD.pack(MAGIC, VERSION, len(header)))
    out.write(header)
    digest = hashlib.sha256()
    size = 0
    chunks = (body,) if isinstance(body, bytes | bytearray | memoryview) else body
    for chunk in chunks:
        out.write(chunk)
        digest.update(chunk)
        size += len(chunk)
    out.write(_TRAILER.pack(size, digest.digest()))
    return size


def parse(blob: bytes) -> tuple[SnapshotMeta, bytes]:
    """Verify and split the bytes of a whole snapshot file; raises :class:`RecordError`."""
    if len(blob) < _HEAD.size + _TRAILER.size:
        raise RecordError(f"snapshot file of {len(blob)} bytes is too short")
    magic, version, header_len = _HEAD.unpack_from(blob)
    if magic != MAGIC:
        raise RecordError("not a snapshot file (bad magic)")
    if version != VERSION:
        raise RecordError(f"unsupported snapshot format version {version}")
    body_start = _HEAD.size + header_len
    body_end = len(blob) - _TRAILER.size
    if body_start > body_end:
        raise RecordError("snapshot header runs past the end of the file")
    meta = decode_meta(blob[_HEAD.size : body_start])
    size, sha = _TRAILER.unpack_from(blob, body_end)
    if size != body_end - body_start:
        raise RecordError(f"snapshot body is {body_end - body_start} bytes, trailer says {size}")
    body = blob[body_start:body_end]
    if hashlib.sha256(body).digest() != sha:
        raise RecordError("snapshot body checksum mismatch")
    return meta, body
