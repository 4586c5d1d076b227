"""The byte format of a store snapshot, used for Raft snapshots and the Snapshot RPC.

Layout::

    magic (16 bytes) | version (1) | revision (8) | compacted (8) | record count (8)
    record*: revision key (17) | value length (4) | value (the stored record, own CRC included)
    trailer: b"END!" | CRC-32 of everything before the trailer's CRC (4)

All integers are big-endian. Records are the stored revision records verbatim, so restoring
re-checks each record's own checksum as well as the stream's; a truncated or damaged stream
is rejected before the store changes.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import BinaryIO, Final

from flotilla.node.kv.errors import CorruptDataError

MAGIC: Final = b"flotilla-kv-snap"
VERSION: Final = 1
TRAILER: Final = b"END!"
_HEAD = struct.Struct(">BqqQ")
_LEN = struct.Struct(">I")
_REV_KEY_LEN: Final = 17


@dataclass(frozen=True, slots=True)
class Header:
    revision: int
    compacted: int
    count: int


def write_chunks(
    header: Header, records: Iterable[tuple[bytes, bytes]], chunk_size: int = 1 << 20
) -> Iterator[bytes]:
    """Serialize a snapshot, yielding chunks of about ``chunk_size`` bytes."""
    buf = bytearray(MAGIC)
    buf += _HEAD.pack(VERSION, header.revision, header.compacted, header.count)
    crc = 0
    n = 0
    for rk, value in records:
        if len(rk) != _REV_KEY_LEN:
            raise ValueError(f"bad revision key {rk!r}")
        buf += rk
        buf += _LEN.pack(len(value))
        buf += value
        n += 1
        if len(buf) >= chunk_size:
            chunk = bytes(buf)
            crc = zlib.crc32(chunk, crc)
            yield chunk
            buf.clear()
    if n != header.count:
        raise RuntimeError(f"snapshot has {n} records, header says {header.count}")
    buf += TRAILER
    crc = zlib.crc32(buf, crc)
    buf += _LEN.pack(crc)
    yield bytes(buf)


class _Reader:
    """Reads exact byte counts from a stream while keeping a running CRC."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self.crc = 0

    def take(self, n: int, *, checksum: bool = True) -> bytes:
        data = self._stream.read(n)
        if data is None or len(data) != n:
            raise CorruptDataError("snapshot is truncated")
        if checksum:
            self.crc = zlib.crc32(data, self.crc)
        return data


def read(stream: BinaryIO) -> tuple[Header, list[tuple[bytes, bytes]]]:
    """Parse and verify a whole snapshot; raise CorruptDataError if anything is off."""
    r = _Reader(stream)
    if r.take(len(MAGIC)) != MAGIC:
        raise CorruptDataError("not a store snapshot")
    version, revision, compacted, count = _HEAD.unpack(r.take(_HEAD.size))
    if version != VERSION:
        raise CorruptDataError(f"unsupported snapshot version {version}")
    records = []
    for _ in range(count):
        rk = r.take(_REV_KEY_LEN)
        (length,) = _LEN.unpack(r.take(_LEN.size))
        records.append((rk, r.take(length)))
    if r.take(len(TRAILER)) != TRAILER:
        raise CorruptDataError("snapshot trailer is missing")
    want = r.crc
    (got,) = _LEN.unpack(r.take(_LEN.size, checksum=False))
    if got != want:
        raise CorruptDataError("snapshot fails its checksum")
    if stream.read(1):
        raise CorruptDataError("snapshot has trailing data")
    return Header(revision, compacted, count), records
