"""The request envelope: round trips, and refusal of what this version cannot read."""

from __future__ import annotations

import pytest

from flotilla.node.api.etcdpb import rpc_pb2 as pb
from flotilla.node.kv import errors, requests
from flotilla.node.kv.requests import Kind, LeaseExpire

RID = bytes(range(16))

CASES = [
    (Kind.PUT, pb.PutRequest(key=b"k", value=b"v" * 100, lease=7, prev_kv=True)),
    (Kind.DELETE_RANGE, pb.DeleteRangeRequest(key=b"a", range_end=b"b", prev_kv=True)),
    (
        Kind.TXN,
        pb.TxnRequest(
            compare=[pb.Compare(key=b"k", target=pb.Compare.VERSION, version=3)],
            success=[pb.RequestOp(request_put=pb.PutRequest(key=b"k", value=b"x"))],
            failure=[pb.RequestOp(request_range=pb.RangeRequest(key=b"k"))],
        ),
    ),
    (Kind.COMPACTION, pb.CompactionRequest(revision=42, physical=True)),
    (Kind.LEASE_GRANT, pb.LeaseGrantRequest(TTL=10, ID=0)),
    (Kind.LEASE_REVOKE, pb.LeaseRevokeRequest(ID=-5)),
    (Kind.LEASE_EXPIRE, LeaseExpire((1, 2, 2**63 - 1, -1))),
    (Kind.LEASE_EXPIRE, LeaseExpire(())),
    (
        Kind.LEASE_CHECKPOINT,
        pb.LeaseCheckpointRequest(checkpoints=[pb.LeaseCheckpoint(ID=3, remaining_TTL=9)]),
    ),
]


@pytest.mark.parametrize(("kind", "req"), CASES)
def test_round_trip(kind: Kind, req: object) -> None:
    data = requests.encode(RID, req)  # type: ignore[arg-type]
    assert data[0] == requests.FORMAT and data[1] == kind
    rid, got_kind, got = requests.decode(data)
    assert (rid, got_kind, got) == (RID, kind, req)


def test_envelope_is_compact() -> None:
    req = pb.PutRequest(key=b"key", value=b"value")
    assert len(requests.encode(RID, req)) == requests.HEADER_SIZE + req.ByteSize()


def test_request_id_must_be_16_bytes() -> None:
    with pytest.raises(ValueError):
        requests.encode(b"short", pb.PutRequest(key=b"k"))


def test_unknown_messages_are_not_replicated() -> None:
    with pytest.raises(TypeError):
        requests.encode(RID, pb.RangeRequest(key=b"k"))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x01\x01short",
        b"\x02\x01" + RID,  # future format
        b"\x01\x63" + RID,  # unknown kind
        b"\x01\x07" + RID + b"\x00\x01",  # partial lease id
        b"\x01\x01" + RID + b"\xff\xff\xff",  # body does not parse
    ],
)
def test_malformed_entries_are_refused(data: bytes) -> None:
    with pytest.raises(errors.MalformedRequestError):
        requests.decode(data)
