"""The KV service over real gRPC: reads, writes, txns, compaction, validation and limits."""

from __future__ import annotations

import grpc
import pytest
from member import CLUSTER_ID, MEMBER_ID, Served

from flotilla.node.api.etcdpb import rpc_pb2 as pb
from flotilla.node.api.etcdpb import rpc_pb2_grpc
from flotilla.node.api.handle import MAX_REQUEST_BYTES


def status(fn, *args):  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.RpcError) as exc:
        fn(*args)
    return exc.value.code(), exc.value.details()


def test_put_and_range_with_headers(kv: rpc_pb2_grpc.KVStub, served: Served) -> None:
    base = served.revision()
    resp = kv.Put(pb.PutRequest(key=b"foo", value=b"bar"))
    h = resp.header
    assert (h.cluster_id, h.member_id, h.raft_term, h.revision) == (
        CLUSTER_ID,
        MEMBER_ID,
        1,
        base + 1,
    )
    resp = kv.Put(pb.PutRequest(key=b"foo", value=b"baz", prev_kv=True))
    assert resp.prev_kv.value == b"bar" and resp.header.revision == base + 2
    got = kv.Range(pb.RangeRequest(key=b"foo"))
    assert [(x.key, x.value, x.version) for x in got.kvs] == [(b"foo", b"baz", 2)]
    assert got.header.revision == base + 2 and got.header.member_id == MEMBER_ID


def test_linearizable_reads_wait_for_the_barrier(kv: rpc_pb2_grpc.KVStub, served: Served) -> None:
    kv.Put(pb.PutRequest(key=b"k", value=b"v"))
    before = served.member.barriers
    kv.Range(pb.RangeRequest(key=b"k"))
    assert served.member.barriers == before + 1
    kv.Range(pb.RangeRequest(key=b"k", serializable=True))
    assert served.member.barriers == before + 1


def test_validation_happens_before_proposing(kv: rpc_pb2_grpc.KVStub, served: Served) -> None:
    assert status(kv.Put, pb.PutRequest(key=b"", value=b"x")) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "etcdserver: key is not provided",
    )
    assert status(kv.Range, pb.RangeRequest(key=b"")) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "etcdserver: key is not provided",
    )
    assert status(kv.DeleteRange, pb.DeleteRangeRequest(key=b"")) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "etcdserver: key is not provided",
    )
    dup = pb.TxnRequest(
        success=[
            pb.RequestOp(request_put=pb.PutRequest(key=b"a")),
            pb.RequestOp(request_put=pb.PutRequest(key=b"a")),
        ]
    )
    assert status(kv.Txn, dup) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "etcdserver: duplicate key given in txn request",
    )
    assert status(kv.Put, pb.PutRequest(key=b"k", value=b"x", ignore_value=True)) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "etcdserver: value is provided",
    )
    assert served.member.proposals == 0 and served.member.barriers == 0


def test_request_too_large(kv: rpc_pb2_grpc.KVStub, served: Served) -> None:
    big = pb.PutRequest(key=b"k", value=b"x" * MAX_REQUEST_BYTES)
    assert status(kv.Put, big) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "etcdserver: request is too large",
    )
    assert served.member.proposals == 0
    kv.Put(pb.PutRequest(key=b"k", value=b"x" * (MAX_REQUEST_BYTES - 100)))


def test_apply_errors_reach_the_client(kv: rpc_pb2_grpc.KVStub) -> None:
    kv.Put(pb.PutRequest(key=b"k", value=b"v"))
    assert status(kv.Put, pb.PutRequest(key=b"k", lease=12345)) == (
        grpc.StatusCode.NOT_FOUND,
        "etcdserver: requested lease not found",
    )
    assert status(kv.Range, pb.RangeRequest(key=b"k", revision=9)) == (
        grpc.StatusCode.OUT_OF_RANGE,
        "etcdserver: mvcc: required revision is a future revision",
    )


def test_delete_range(kv: rpc_pb2_grpc.KVStub, served: Served) -> None:
    base = served.revision()
    for k in (b"a1", b"a2", b"b1"):
        kv.Put(pb.PutRequest(key=k, value=k))
    resp = kv.DeleteRange(pb.DeleteRangeRequest(key=b"a", range_end=b"b", prev_kv=True))
    assert resp.deleted == 2 and [x.key for x in resp.prev_kvs] == [b"a1", b"a2"]
    assert resp.header.revision == base + 4
    resp = kv.DeleteRange(pb.DeleteRangeRequest(key=b"zz"))
    assert resp.deleted == 0 and resp.header.revision == base + 4


def test_read_only_txn_is_not_proposed(kv: rpc_pb2_grpc.KVStub, served: Served) -> None:
    base = served.revision()
    kv.Put(pb.PutRequest(key=b"k", value=b"v"))
    proposals, barriers = served.member.proposals, served.member.barriers
    txn = pb.TxnRequest(
        compare=[pb.Compare(key=b"k", target=pb.Compare.VALUE, value=b"v")],
        success=[pb.RequestOp(request_range=pb.RangeRequest(key=b"k"))],
        failure=[],
    )
    resp = kv.Txn(txn)
    assert resp.succeeded and resp.responses[0].response_range.kvs[0].value == b"v"
    assert resp.header.revision == base + 1
    assert served.member.proposals == proposals
    assert served.member.barriers == barriers + 1
    txn.success[0].request_range.serializable = True
    kv.Txn(txn)
    assert served.member.barriers == barriers + 1


def test_write_txn(kv: rpc_pb2_grpc.KVStub, served: Served) -> None:
    txn = pb.TxnRequest(
        compare=[pb.Compare(key=b"k", target=pb.Compare.CREATE, create_revision=0)],
        success=[pb.RequestOp(request_put=pb.PutRequest(key=b"k", value=b"first"))],
        failure=[pb.RequestOp(request_range=pb.RangeRequest(key=b"k"))],
    )
    assert kv.Txn(txn).succeeded
    resp = kv.Txn(txn)
    assert not resp.succeeded
    assert resp.responses[0].response_range.kvs[0].value == b"first"
    assert served.member.proposals == 2


def test_compact(kv: rpc_pb2_grpc.KVStub, served: Served) -> None:
    base = served.revision()
    for i in range(5):
        kv.Put(pb.PutRequest(key=b"k", value=str(i).encode()))
    assert kv.Compact(pb.CompactionRequest(revision=base + 3)).header.revision == base + 5
    assert status(kv.Range, pb.RangeRequest(key=b"k", revision=base + 2)) == (
        grpc.StatusCode.OUT_OF_RANGE,
        "etcdserver: mvcc: required revision has been compacted",
    )
    assert status(kv.Compact, pb.CompactionRequest(revision=base + 3)) == (
        grpc.StatusCode.OUT_OF_RANGE,
        "etcdserver: mvcc: required revision has been compacted",
    )
    assert kv.Range(pb.RangeRequest(key=b"k", revision=base + 3)).kvs[0].value == b"2"
