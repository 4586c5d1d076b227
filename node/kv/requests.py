"""The envelope of a replicated request: the bytes of one Raft log entry's data.

Layout::

    format (1 byte) | kind (1 byte) | request id (16 bytes) | body

``format`` lets the layout evolve: a member refuses an entry of a format it does not know
instead of guessing. ``kind`` says how to parse ``body``: the serialized etcd protobuf message
for client requests, or a packed list of lease ids for the internal LeaseExpire. The request
id is opaque to the state machine; the proposer picks it (16 random bytes) and uses it to find
the client waiting for the result. A fixed binary header keeps an entry a few bytes larger than
the client's own message, with no JSON or second protobuf layer to build and parse per entry.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import Final, TypeAlias

from flotilla.node.api.etcdpb.rpc_pb2 import (
    CompactionRequest,
    DeleteRangeRequest,
    LeaseCheckpointRequest,
    LeaseGrantRequest,
    LeaseRevokeRequest,
    PutRequest,
    TxnRequest,
)
from flotilla.node.kv.errors import MalformedRequestError

FORMAT: Final = 1
ID_SIZE: Final = 16
HEADER_SIZE: Final = 2 + ID_SIZE

_ID = struct.Struct(">q")


class Kind(IntEnum):
    """What an entry asks the state machine to do."""

    PUT = 1
    DELETE_RANGE = 2
    TXN = 3
    COMPACTION = 4
    LEASE_GRANT = 5
    LEASE_REVOKE = 6
    LEASE_EXPIRE = 7
    LEASE_CHECKPOINT = 8


@dataclass(frozen=True, slots=True)
class LeaseExpire:
    """Internal request: the leader found these leases expired; revoke each that still exists.

    Only the leader decides expiry (it alone runs the lease clocks), but the revocation itself
    goes through the log so every member deletes the same keys at the same revision.
    """

    ids: tuple[int, ...]


Request: TypeAlias = (
    PutRequest
    | DeleteRangeRequest
    | TxnRequest
    | CompactionRequest
    | LeaseGrantRequest
    | LeaseRevokeRequest
    | LeaseCheckpointRequest
    | LeaseExpire
)

_KIND_OF: Final[dict[type, Kind]] = {
    PutRequest: Kind.PUT,
    DeleteRangeRequest: Kind.DELETE_RANGE,
    TxnRequest: Kind.TXN,
    CompactionRequest: Kind.COMPACTION,
    LeaseGrantRequest: Kind.LEASE_GRANT,
    LeaseRevokeRequest: Kind.LEASE_REVOKE,
    LeaseExpire: Kind.LEASE_EXPIRE,
    LeaseCheckpointRequest: Kind.LEASE_CHECKPOINT,
}

_MESSAGE_OF: Final[dict[Kind, type]] = {
    Kind.PUT: PutRequest,
    Kind.DELETE_RANGE: DeleteRangeRequest,
    Kind.TXN: TxnRequest,
    Kind.COMPACTION: CompactionRequest,
    Kind.LEASE_GRANT: LeaseGrantRequest,
    Kind.LEASE_REVOKE: LeaseRevokeRequest,
    Kind.LEASE_CHECKPOINT: LeaseCheckpointRequest,
}

# Prebuilt headers: one bytes concatenation per encode.
_PREFIX: Final = {kind: bytes((FORMAT, kind)) for kind in Kind}


def kind_of(request: Request) -> Kind:
    """The kind of ``request``; raises TypeError for anything that cannot be replicated."""
    try:
        return _KIND_OF[type(request)]
    except KeyError:
        raise TypeError(f"{type(request).__name__} is not a replicated request") from None


def encode(request_id: bytes, request: Request) -> bytes:
    """The entry data that replicates ``request`` under ``request_id`` (16 bytes)."""
    if len(request_id) != ID_SIZE:
        raise ValueError(f"a request id is {ID_SIZE} bytes, got {len(request_id)}")
    kind = kind_of(request)
    if isinstance(request, LeaseExpire):
        body = b"".join(_ID.pack(i) for i in request.ids)
    else:
        body = request.SerializeToString()
    return _PREFIX[kind] + request_id + body


def decode(data: bytes) -> tuple[bytes, Kind, Request]:
    """Parse entry data into ``(request_id, kind, request)``.

    Raises :class:`MalformedRequestError` for an unknown format or kind or an unparsable
    body; every member raises it alike for the same entry, so the state machine can answer
    the entry with that error and stay deterministic.
    """
    if len(data) < HEADER_SIZE:
        raise MalformedRequestError("entry is shorter than the envelope header")
    if data[0] != FORMAT:
        raise MalformedRequestError(f"unknown envelope format {data[0]}")
    try:
        kind = Kind(data[1])
    except ValueError:
        raise MalformedRequestError(f"unknown request kind {data[1]}") from None
    request_id = data[2:HEADER_SIZE]
    body = data[HEADER_SIZE:]
    if kind is Kind.LEASE_EXPIRE:
        if len(body) % _ID.size:
            raise MalformedRequestError("lease id list has a partial id")
        ids = tuple(i for (i,) in _ID.iter_unpack(body))
        return request_id, kind, LeaseExpire(ids)
    message = _MESSAGE_OF[kind]()
    try:
        message.ParseFromString(body)
    except Exception as exc:  # protobuf raises its own DecodeError
        raise MalformedRequestError(f"{kind.name} body does not parse: {exc}") from exc
    return request_id, kind, message
