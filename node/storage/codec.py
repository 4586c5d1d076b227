"""Byte layout of the Raft records in LevelDB, each protected by a CRC-32.

Keys::

    r/e/<index: 8 bytes big-endian>   one log entry (byte order of keys = index order)
    r/hs                              hard state
    r/snap                            metadata of the latest snapshot

Values start with the CRC-32 of the rest. An entry's CRC is seeded with the low 32 bits of its
index, so a record that ends up under the wrong key fails its check like a flipped bit does.
All integers are big-endian. Decoders raise :class:`RecordError` with the reason; the caller
adds which key and which data dir.
"""

from __future__ import annotations

import struct
import zlib
from typing import Final

from flotilla.node.raft.types import ConfState, Entry, EntryType, HardState, SnapshotMeta

ENTRY_PREFIX: Final = b"r/e/"
ENTRY_PREFIX_END: Final = b"r/e0"  # the first key after every entry key
HARD_STATE_KEY: Final = b"r/hs"
SNAPSHOT_KEY: Final = b"r/snap"
RAFT_PREFIX: Final = b"r/"

_INDEX = struct.Struct(">Q")
_ENTRY = struct.Struct(">IQB")  # crc, term, type; the data follows
_ENTRY_TAIL = struct.Struct(">QB")
_CRC = struct.Struct(">I")
_HARD_STATE = struct.Struct(">QQQ")
_META_HEAD = struct.Struct(">QQIII")
_MASK: Final = 0xFFFFFFFF
_ENTRY_TYPES: Final = tuple(EntryType)

_crc32 = zlib.crc32
pack_index = _INDEX.pack


class RecordError(ValueError):
    """A record that failed its checksum or could not be decoded."""


def entry_key(index: int) -> bytes:
    return ENTRY_PREFIX + pack_index(index)


def key_index(key: bytes) -> int:
    if len(key) != 12:
        raise RecordError(f"malformed entry key {key!r}")
    return int(_INDEX.unpack_from(key, 4)[0])


def encode_entry(e: Entry) -> bytes:
    data: bytes = e.data
    crc = _crc32(data, _crc32(_ENTRY_TAIL.pack(e.term, e.type), e.index & _MASK))
    return _ENTRY.pack(crc, e.term, e.type) + data


def decode_entry(index: int, value: bytes) -> Entry:
    if len(value) < _ENTRY.size:
        raise RecordError(f"entry record of {len(value)} bytes is too short")
    crc, term, etype = _ENTRY.unpack_from(value)
    data = value[_ENTRY.size :]
    if _crc32(data, _crc32(value[4 : _ENTRY.size], index & _MASK)) != crc:
        raise RecordError("entry checksum mismatch")
    if etype >= len(_ENTRY_TYPES):
        raise RecordError(f"unknown entry type {etype}")
    return Entry(term, index, data, _ENTRY_TYPES[etype])


def seal(body: bytes) -> bytes:
    """Prefix a small record with the CRC-32 of its body."""
    return _CRC.pack(_crc32(body)) + body


def unseal(value: bytes) -> bytes:
    if len(value) < 4:
        raise RecordError(f"record of {len(value)} bytes is too short")
    body = value[4:]
    if _crc32(body) != _CRC.unpack_from(value)[0]:
        raise RecordError("checksum mismatch")
    return body


def encode_hard_state(hs: HardState) -> bytes:
    return seal(_HARD_STATE.pack(hs.term, hs.vote, hs.commit))


def decode_hard_state(value: bytes) -> HardState:
    body = unseal(value)
    if len(body) != _HARD_STATE.size:
        raise RecordError(f"hard state of {len(body)} bytes, expected {_HARD_STATE.size}")
    term, vote, commit = _HARD_STATE.unpack(body)
    return HardState(term, vote, commit)


def encode_meta(meta: SnapshotMeta) -> bytes:
    """Snapshot metadata: index, term, then the voter, outgoing and learner id lists."""
    conf = meta.conf
    ids = [*sorted(conf.voters), *sorted(conf.outgoing), *sorted(conf.learners)]
    head = _META_HEAD.pack(
        meta.index, meta.term, len(conf.voters), len(conf.outgoing), len(conf.learners)
    )
    return seal(head + struct.pack(f">{len(ids)}Q", *ids))


def decode_meta(value: bytes) -> SnapshotMeta:
    body = unseal(value)
    if len(body) < _META_HEAD.size:
        raise RecordError(f"snapshot metadata of {len(body)} bytes is too short")
    index, term, nv, no, nl = _META_HEAD.unpack_from(body)
    n = nv + no + nl
    if len(body) != _META_HEAD.size + 8 * n:
        raise RecordError(f"snapshot metadata of {len(body)} bytes does not hold {n} ids")
    ids = struct.unpack_from(f">{n}Q", body, _META_HEAD.size)
    conf = ConfState(frozenset(ids[:nv]), frozenset(ids[nv : nv + no]), frozenset(ids[nv + no :]))
    return SnapshotMeta(index, term, conf)
