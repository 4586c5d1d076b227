"""Txn: compare semantics, nested txns, the duplicate-key rule and atomicity."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from kvharness import Harness

from flotilla.node.api.etcdpb import rpc_pb2 as pb
from flotilla.node.kv import errors

C = pb.Compare


def cmp(key: bytes, target: int, result: int, range_end: bytes = b"", **union: Any) -> pb.Compare:
    return pb.Compare(key=key, target=target, result=result, range_end=range_end, **union)


def put(key: bytes, value: bytes = b"", **kw: Any) -> pb.RequestOp:
    return pb.RequestOp(request_put=pb.PutRequest(key=key, value=value, **kw))


def rng(key: bytes, range_end: bytes = b"", **kw: Any) -> pb.RequestOp:
    return pb.RequestOp(request_range=pb.RangeRequest(key=key, range_end=range_end, **kw))


def dele(key: bytes, range_end: bytes = b"") -> pb.RequestOp:
    return pb.RequestOp(request_delete_range=pb.DeleteRangeRequest(key=key, range_end=range_end))


def txn(
    compare: list[pb.Compare] | None = None,
    success: list[pb.RequestOp] | None = None,
    failure: list[pb.RequestOp] | None = None,
) -> pb.TxnRequest:
    return pb.TxnRequest(compare=compare or [], success=success or [], failure=failure or [])


def nested(req: pb.TxnRequest) -> pb.RequestOp:
    return pb.RequestOp(request_txn=req)


@pytest.fixture
def ab(h: Harness) -> Harness:
    # The empty store is at rev 1, as etcd's.
    h.put(b"a", b"apple", lease=0)  # rev 2
    h.put(b"b", b"banana")  # rev 3
    h.put(b"b", b"blueberry")  # rev 4, version 2
    return h


@pytest.mark.parametrize(
    ("compare", "expected"),
    [
        (cmp(b"a", C.VALUE, C.EQUAL, value=b"apple"), True),
        (cmp(b"a", C.VALUE, C.GREATER, value=b"apple"), False),
        (cmp(b"a", C.VALUE, C.LESS, value=b"b"), True),
        (cmp(b"a", C.VALUE, C.NOT_EQUAL, value=b"apple"), False),
        (cmp(b"b", C.VERSION, C.EQUAL, version=2), True),
        (cmp(b"b", C.VERSION, C.GREATER, version=1), True),
        (cmp(b"b", C.CREATE, C.EQUAL, create_revision=3), True),
        (cmp(b"b", C.MOD, C.EQUAL, mod_revision=4), True),
        (cmp(b"b", C.MOD, C.LESS, mod_revision=4), False),
        (cmp(b"a", C.LEASE, C.EQUAL, lease=0), True),
        # A missing key compares as all-zero, except on VALUE, which always fails.
        (cmp(b"zz", C.VERSION, C.EQUAL, version=0), True),
        (cmp(b"zz", C.CREATE, C.EQUAL, create_revision=0), True),
        (cmp(b"zz", C.VALUE, C.EQUAL, value=b""), False),
        (cmp(b"zz", C.VALUE, C.NOT_EQUAL, value=b"x"), False),
        # range_end: every key in the range must satisfy the compare.
        (cmp(b"a", C.VERSION, C.GREATER, b"c", version=0), True),
        (cmp(b"a", C.VERSION, C.EQUAL, b"c", version=2), False),
        (cmp(b"a", C.MOD, C.LESS, b"\x00", mod_revision=5), True),
        (cmp(b"c", C.VERSION, C.EQUAL, b"d", version=0), True),
    ],
)
def test_compare(ab: Harness, compare: pb.Compare, expected: bool) -> None:
    resp = ab.txn(txn([compare], [rng(b"a")], [rng(b"b")]))
    assert resp.succeeded is expected
    (r,) = resp.responses
    assert r.response_range.kvs[0].key == (b"a" if expected else b"b")
    assert resp.header.revision == 4  # read-only txn: no new revision


def test_compares_are_a_conjunction(ab: Harness) -> None:
    ok = cmp(b"a", C.VALUE, C.EQUAL, value=b"apple")
    bad = cmp(b"b", C.VERSION, C.EQUAL, version=5)
    assert ab.txn(txn([ok])).succeeded
    assert not ab.txn(txn([ok, bad])).succeeded


def test_writes_share_one_revision(ab: Harness) -> None:
    applied = ab.commit(
        lambda b: ab.store.txn(txn([], [put(b"x", b"1"), dele(b"a"), put(b"y", b"2")]), b)
    )
    resp = applied.response
    assert resp.succeeded and resp.header.revision == 5
    assert [r.WhichOneof("response") for r in resp.responses] == [
        "response_put",
        "response_delete_range",
        "response_put",
    ]
    assert resp.responses[0].response_put.header.revision == 5
    assert resp.responses[1].response_delete_range.deleted == 1
    assert [(e.kv.key, e.kv.mod_revision) for e in applied.events] == [
        (b"x", 5),
        (b"a", 5),
        (b"y", 5),
    ]
    assert ab.get(b"x").kvs[0].create_revision == 5


def test_reads_inside_txn_see_earlier_writes(ab: Harness) -> None:
    resp = ab.txn(txn([], [put(b"n", b"new"), rng(b"n"), rng(b"a", revision=2)]))
    got = resp.responses[1].response_range
    assert got.kvs[0].value == b"new" and got.header.revision == 5
    assert resp.responses[2].response_range.kvs[0].value == b"apple"


def test_nested_txn(ab: Harness) -> None:
    inner = txn(
        [cmp(b"b", C.VALUE, C.EQUAL, value=b"blueberry")],
        [put(b"inner", b"then")],
        [put(b"inner", b"else")],
    )
    resp = ab.txn(txn([cmp(b"a", C.VERSION, C.EQUAL, version=1)], [put(b"o", b"1"), nested(inner)]))
    assert resp.succeeded
    sub = resp.responses[1].response_txn
    assert sub.succeeded and sub.header.revision == 0  # etcd leaves nested headers unset
    assert ab.get(b"inner").kvs[0].value == b"then"
    assert ab.store.revision == 5


def test_nested_compares_see_state_before_the_txn(ab: Harness) -> None:
    # The outer op writes "flag"; the nested compare on "flag" still sees it absent.
    inner = txn([cmp(b"flag", C.VERSION, C.EQUAL, version=0)], [put(b"r", b"before")])
    inner.failure.append(put(b"r", b"after"))
    ab.txn(txn([], [put(b"flag", b"1"), nested(inner)]))
    assert ab.get(b"r").kvs[0].value == b"before"


@pytest.mark.parametrize(
    "request_",
    [
        txn([], [put(b"k"), put(b"k")]),
        txn([], [put(b"k"), dele(b"k")]),
        txn([], [dele(b"a", b"z"), put(b"k")]),
        txn([], [put(b"k"), nested(txn([], [put(b"k")]))]),
        txn([], [dele(b"k"), nested(txn([], [], [put(b"k")]))]),
        txn([], [nested(txn([], [put(b"k")])), nested(txn([], [put(b"k")]))]),
        txn([], [], [put(b"k"), put(b"k")]),
        txn([], [dele(b"a", b"\x00"), put(b"k")]),
    ],
)
def test_duplicate_key_rejected(ab: Harness, request_: pb.TxnRequest) -> None:
    with pytest.raises(errors.DuplicateKeyError) as exc:
        ab.txn(request_)
    assert exc.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert exc.value.message == "etcdserver: duplicate key given in txn request"
    assert ab.store.revision == 4


def test_allowed_repeats(ab: Harness) -> None:
    # Both branches of a nested txn may put the same key; overlapping deletes are fine.
    ab.txn(txn([], [nested(txn([], [put(b"k", b"1")], [put(b"k", b"2")]))]))
    resp = ab.txn(txn([], [dele(b"a", b"c"), dele(b"b", b"d")]))
    assert [r.response_delete_range.deleted for r in resp.responses] == [2, 0]
    assert ab.store.revision == 6


def test_too_many_ops(h: Harness) -> None:
    many = txn([], [put(b"k%d" % i) for i in range(129)])
    with pytest.raises(errors.TooManyOpsError) as exc:
        h.txn(many)
    assert exc.value.message == "etcdserver: too many operations in txn request"
    h.txn(txn([], [put(b"k%d" % i) for i in range(128)]))
    assert h.get(b"k", b"l", count_only=True).count == 128


def test_empty_keys_and_ops(h: Harness) -> None:
    with pytest.raises(errors.EmptyKeyError):
        h.txn(txn([cmp(b"", C.VERSION, C.EQUAL)]))
    with pytest.raises(errors.EmptyKeyError):
        h.txn(txn([], [put(b"")]))
    with pytest.raises(errors.KeyNotFoundError):
        h.txn(txn([], [pb.RequestOp()]))


def test_failed_check_changes_nothing(ab: Harness) -> None:
    # The second op fails its check (ignore_value on a missing key): the first must not apply.
    batch = ab.db.write_batch()
    with pytest.raises(errors.KeyNotFoundError):
        ab.store.txn(txn([], [put(b"first", b"1"), put(b"missing", ignore_value=True)]), batch)
    batch.write()
    assert ab.get(b"first").count == 0 and ab.store.revision == 4
    with pytest.raises(errors.FutureRevisionError):
        ab.txn(txn([], [put(b"first", b"1"), rng(b"a", revision=5)]))
    assert ab.get(b"first").count == 0


def test_only_the_executed_branch_is_checked(ab: Harness) -> None:
    resp = ab.txn(
        txn(
            [cmp(b"a", C.VERSION, C.EQUAL, version=1)],
            [put(b"ok", b"1")],
            [put(b"missing", ignore_value=True)],
        )
    )
    assert resp.succeeded and ab.get(b"ok").count == 1


def test_txn_prev_kv_and_delete_prev_kv(ab: Harness) -> None:
    resp = ab.txn(txn([], [put(b"a", b"apricot", prev_kv=True)]))
    assert resp.responses[0].response_put.prev_kv.value == b"apple"
