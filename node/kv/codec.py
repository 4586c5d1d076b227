"""How the store lays out its records in LevelDB, and the checksum that guards each record.

Keys (all under the store's prefix):

* ``r`` + 8-byte big-endian main revision + 8-byte big-endian sub revision: one record per
  change. Big-endian so that LevelDB's byte order is revision order, which makes the startup
  scan, watch replay and snapshots plain forward iterations.
* ``m`` + name: metadata: the compacted revision, and the current revision as of the last
  compaction (later revisions are known from their records, so a write adds no metadata).

Values: a 4-byte big-endian CRC-32, a 1-byte kind, then the body. For revision records the body
is a serialized ``mvccpb.KeyValue`` (for a deletion only key and mod_revision are set). The CRC
covers the record's key (without the prefix) as well as kind and body, so a value that was
written under the wrong key is detected just like a flipped bit.
"""

from __future__ import annotations

import struct
import zlib
from typing import Final

from flotilla.node.api.etcdpb.kv_pb2 import KeyValue
from flotilla.node.kv.errors import CorruptDataError

REV_TAG: Final = b"r"
META_TAG: Final = b"m"
META_CURRENT: Final = META_TAG + b"current"
META_COMPACTED: Final = META_TAG + b"compacted"

KIND_PUT: Final = 0
KIND_TOMBSTONE: Final = 1
KIND_META: Final = 2

_REV = struct.Struct(">QQ")
_CRC = struct.Struct(">I")
_I64 = struct.Struct(">q")
_PUT_BYTE: Final = bytes([KIND_PUT])
_TOMB_BYTE: Final = bytes([KIND_TOMBSTONE])
_META_BYTE: Final = bytes([KIND_META])

crc32 = zlib.crc32
_crc32 = zlib.crc32
_crc_pack = _CRC.pack
_rev_pack = _REV.pack


def rev_key(main: int, sub: int) -> bytes:
    """The record key (without prefix) of revision ``(main, sub)``."""
    return REV_TAG + _rev_pack(main, sub)


def parse_rev_key(key: bytes) -> tuple[int, int]:
    """Inverse of :func:`rev_key`; raises CorruptDataError on a malformed key."""
    if len(key) != 17 or key[:1] != REV_TAG:
        raise CorruptDataError(f"malformed revision key {key!r}")
    main, sub = _REV.unpack_from(key, 1)
    return main, sub


def encode_kv(key: bytes, tombstone: bool, body: bytes) -> bytes:
    """The stored value of a revision record whose KeyValue serializes to ``body``."""
    kind = _TOMB_BYTE if tombstone else _PUT_BYTE
    return _crc_pack(_crc32(body, _crc32(kind, _crc32(key)))) + kind + body


def _check(key: bytes, value: bytes | None) -> None:
    if value is None:
        raise CorruptDataError(f"record {key!r} is missing")
    if len(value) < 5:
        raise CorruptDataError(f"record {key!r} is truncated")
    (want,) = _CRC.unpack_from(value)
    got = _crc32(memoryview(value)[4:], _crc32(key))
    if got != want:
        raise CorruptDataError(f"record {key!r} fails its checksum")


def decode_kv_into(key: bytes, value: bytes | None, out: KeyValue) -> bool:
    """Verify a revision record and parse its KeyValue into ``out``; return is-tombstone.

    Parsing into a caller-provided message lets a range parse straight into the repeated
    field of its response, with no intermediate copy.
    """
    _check(key, value)
    assert value is not None
    kind = value[4]
    if kind != KIND_PUT and kind != KIND_TOMBSTONE:
        raise CorruptDataError(f"record {key!r} has kind {kind}, expected a key-value")
    try:
        out.ParseFromString(value[5:])
    except Exception as exc:  # protobuf raises its own DecodeError
        raise CorruptDataError(f"record {key!r} does not decode: {exc}") from exc
    return kind == KIND_TOMBSTONE


def decode_kv(key: bytes, value: bytes | None) -> tuple[bool, KeyValue]:
    """Verify and decode a revision record: ``(is_tombstone, KeyValue)``."""
    kv = KeyValue()
    tombstone = decode_kv_into(key, value, kv)
    return tombstone, kv


def encode_meta(key: bytes, number: int) -> bytes:
    """The stored value of a metadata record holding one integer."""
    body = _META_BYTE + _I64.pack(number)
    return _crc_pack(_crc32(body, _crc32(key))) + body


def decode_meta(key: bytes, value: bytes | None) -> int:
    """Verify and decode a metadata record written by :func:`encode_meta`."""
    _check(key, value)
    assert value is not None
    if value[4] != KIND_META or len(value) != 13:
        raise CorruptDataError(f"metadata record {key!r} is malformed")
    (number,) = _I64.unpack_from(value, 5)
    return int(number)
