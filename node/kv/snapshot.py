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


def read(stream: BinaryIO) -> tuple[Header, list[tuple[bytes, bytes]]]:
    """Parse and verify a whole snapshot; raise CorruptDataError if anything is off."""
    return parse(stream.read())


def parse(data: bytes) -> tuple[Header, list[tuple[bytes, bytes]]]:
    """Parse and verify a whole snapshot held in memory (see :func:`read`).

    One CRC over the whole buffer and offsets read with ``unpack_from``: a learner restores
    a snapshot of 100,000 records in a fraction of the time record-by-record reads take.
    """
    end = len(data) - _LEN.size
    if end < len(MAGIC) + _HEAD.size + len(TRAILER):
        raise CorruptDataError("snapshot is truncated")
    if data[: len(MAGIC)] != MAGIC:
        raise CorruptDataError("not a store snapshot")
    version, revision, compacted, count = _HEAD.unpack_from(data, len(MAGIC))
    if version != VERSION:
        raise CorruptDataError(f"unsupported snapshot version {version}")
    # Framing before the checksum, so a truncated stream is reported as truncated.
    pos = len(MAGIC) + _HEAD.size
    body_end = end - len(TRAILER)
    records: list[tuple[bytes, bytes]] = []
    append = records.append
    unpack_len = _LEN.unpack_from
    for _ in range(count):
        value_at = pos + _REV_KEY_LEN + _LEN.size
        if value_at > body_end:
            raise CorruptDataError("snapshot is truncated")
        (length,) = unpack_len(data, pos + _REV_KEY_LEN)
        value_end = value_at + length
        if value_end > body_end:
            raise CorruptDataError("snapshot is truncated")
        append((data[pos : pos + _REV_KEY_LEN], data[value_at:value_end]))
        pos = value_end
    if pos != body_end:
        # Either records are missing from the end or bytes follow the trailer.
        if data[pos : pos + len(TRAILER)] != TRAILER:
            raise CorruptDataError("snapshot trailer is missing")
        raise CorruptDataError("snapshot has trailing data")
    if data[body_end:end] != TRAILER:
        raise CorruptDataError("snapshot trailer is missing")
    (got,) = _LEN.unpack_from(data, end)
    if got != zlib.crc32(memoryview(data)[:end]):
        raise CorruptDataError("snapshot fails its checksum")
    return Header(revision, compacted, count), records
