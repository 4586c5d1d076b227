"""Snapshots of the replicated state: every LevelDB record under the state's prefixes.

The state machine (MVCC store, leases, member list, applied index) lives in one LevelDB under
a few key prefixes, so a consistent snapshot is a LevelDB snapshot's records under those
prefixes. The dump is taken from a LevelDB snapshot object in a worker thread while the loop
keeps applying; restoring replaces those prefixes in one write batch. The format is a
sequence of length-prefixed key/value records followed by a SHA-256 of everything before it,
checked before anything is written.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable
from typing import Any

from flotilla.node.kv.errors import CorruptDataError

MAGIC = b"FLTSNAP1"
_LEN = struct.Struct(">II")


class SnapshotCorrupt(CorruptDataError):
    """A state snapshot failed its checksum or framing; nothing was applied."""


def dump(view: Any, prefixes: Iterable[bytes]) -> bytes:
    """Serialize every record under ``prefixes`` from ``view`` (a plyvel DB or snapshot)."""
    parts = [MAGIC]
    for prefix in prefixes:
        for key, value in view.iterator(prefix=prefix):
            parts.append(_LEN.pack(len(key), len(value)))
            parts.append(key)
            parts.append(value)
    body = b"".join(parts)
    return body + hashlib.sha256(body).digest()


def parse(data: bytes) -> list[tuple[bytes, bytes]]:
    if len(data) < len(MAGIC) + 32 or not data.startswith(MAGIC):
        raise SnapshotCorrupt("not a Flotilla state snapshot")
    body, digest = data[:-32], data[-32:]
    if hashlib.sha256(body).digest() != digest:
        raise SnapshotCorrupt("state snapshot checksum mismatch")
    records = []
    pos = len(MAGIC)
    end = len(body)
    while pos < end:
        if pos + _LEN.size > end:
            raise SnapshotCorrupt("truncated record header")
        klen, vlen = _LEN.unpack_from(body, pos)
        pos += _LEN.size
        if pos + klen + vlen > end:
            raise SnapshotCorrupt("truncated record")
        records.append((body[pos : pos + klen], body[pos + klen : pos + klen + vlen]))
        pos += klen + vlen
    return records


def restore(db: Any, data: bytes, prefixes: Iterable[bytes]) -> None:
    """Replace everything under ``prefixes`` with the snapshot's records, atomically."""
    records = parse(data)
    batch = db.write_batch(sync=True)
    for prefix in prefixes:
        for key in db.iterator(prefix=prefix, include_value=False):
            batch.delete(key)
    for key, value in records:
        batch.put(key, value)
    batch.write()
