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


def encoded_size(count: int, value_bytes: int) -> int:
    """The length of a snapshot of ``count`` records whose values total ``value_bytes``."""
    head = len(MAGIC) + _HEAD.size
    return head + count * (_REV_KEY_LEN + _LEN.size) + value_bytes + len(TRAILER) + _LEN.size


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
    """Parse and verify a whole snapshot held in memory (see :func:`read`)."""
    reader = Reader()
    records = reader.feed(data)
    return reader.finish(), records


class Reader:
    """Parses and verifies a snapshot as its bytes arrive, in pieces of any size.

    ``feed`` returns the records a piece completes and ``finish`` checks the end: the count,
    the trailer and the CRC over everything. Until ``finish`` returns, the records handed out
    are unverified, so a caller keeps them aside (a learner indexes them while the rest of
    the snapshot is still on its way, and installs nothing before the end checks out).

    One CRC pass over each piece and offsets read with ``unpack_from``: a learner reads a
    snapshot of 100,000 records in a fraction of the time record-by-record reads take.
    """

    def __init__(self) -> None:
        self._pending = b""  # bytes of a record (or the header, or the trailer) not yet whole
        self._crc = 0
        self._header: Header | None = None
        self._left = 0  # records still to come

    def feed(self, data: bytes) -> list[tuple[bytes, bytes]]:
        buf = self._pending + data if self._pending else data
        pos = 0
        if self._header is None:
            start = len(MAGIC) + _HEAD.size
            if buf[: len(MAGIC)] != MAGIC[: len(buf)]:
                raise CorruptDataError("not a store snapshot")
            if len(buf) < start:
                self._pending = buf
                return []
            version, revision, compacted, count = _HEAD.unpack_from(buf, len(MAGIC))
            if version != VERSION:
                raise CorruptDataError(f"unsupported snapshot version {version}")
            self._header = Header(revision, compacted, count)
            self._left = count
            pos = start
        records: list[tuple[bytes, bytes]] = []
        append = records.append
        unpack_len = _LEN.unpack_from
        end = len(buf)
        left = self._left
        while left:
            value_at = pos + _REV_KEY_LEN + _LEN.size
            if value_at > end:
                break
            (length,) = unpack_len(buf, pos + _REV_KEY_LEN)
            value_end = value_at + length
            if value_end > end:
                break
            append((buf[pos : pos + _REV_KEY_LEN], buf[value_at:value_end]))
            pos = value_end
            left -= 1
        self._left = left
        self._crc = zlib.crc32(memoryview(buf)[:pos], self._crc)
        self._pending = buf[pos:]
        if not left and len(self._pending) > len(TRAILER) + _LEN.size:
            raise self._bad_end()
        return records

    def finish(self) -> Header:
        """Check that the snapshot ended where it should, whole; its header."""
        tail = self._pending
        if self._header is None or self._left:
            raise CorruptDataError("snapshot is truncated")
        if len(tail) != len(TRAILER) + _LEN.size:
            raise self._bad_end()
        (got,) = _LEN.unpack_from(tail, len(TRAILER))
        if got != zlib.crc32(TRAILER, self._crc):
            raise CorruptDataError("snapshot fails its checksum")
        return self._header

    def _bad_end(self) -> CorruptDataError:
        # Either records are missing from the end or bytes follow the trailer.
        tail = self._pending
        if tail[: len(TRAILER)] != TRAILER:
            return CorruptDataError("snapshot trailer is missing")
        if len(tail) > len(TRAILER) + _LEN.size:
            return CorruptDataError("snapshot has trailing data")
        return CorruptDataError("snapshot is truncated")
