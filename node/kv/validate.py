"""Request checks that etcd performs before a request is proposed to Raft.

etcd rejects malformed requests in its gRPC layer, so they never reach the log. The API layer
should call these before proposing, and the store calls them again when applying, so that an
entry that slipped through fails cleanly, before any change is made, on every member alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from flotilla.node.api.etcdpb.rpc_pb2 import (
    DeleteRangeRequest,
    PutRequest,
    RangeRequest,
    RequestOp,
    TxnRequest,
)
from flotilla.node.kv.errors import (
    DuplicateKeyError,
    EmptyKeyError,
    InvalidSortOptionError,
    KeyNotFoundError,
    LeaseProvidedError,
    TooManyOpsError,
    ValueProvidedError,
)

DEFAULT_MAX_TXN_OPS: Final = 128
"""etcd's default ``--max-txn-ops``."""

_SORT_ORDERS: Final = frozenset(RangeRequest.SortOrder.values())
_SORT_TARGETS: Final = frozenset(RangeRequest.SortTarget.values())


def check_range(req: RangeRequest) -> None:
    if not req.key:
        raise EmptyKeyError()
    if req.sort_order not in _SORT_ORDERS or req.sort_target not in _SORT_TARGETS:
        raise InvalidSortOptionError()


def check_put(req: PutRequest) -> None:
    if not req.key:
        raise EmptyKeyError()
    if req.ignore_value and req.value:
        raise ValueProvidedError()
    if req.ignore_lease and req.lease:
        raise LeaseProvidedError()


def check_delete(req: DeleteRangeRequest) -> None:
    if not req.key:
        raise EmptyKeyError()


def check_txn(req: TxnRequest, max_ops: int = DEFAULT_MAX_TXN_OPS) -> None:
    """etcd's full txn check: sizes and shapes first, then the duplicate-key rule."""
    _check_txn_shape(req, max_ops)
    check_intervals(req.success)
    check_intervals(req.failure)


def _check_txn_shape(req: TxnRequest, max_ops: int) -> None:
    if max(len(req.compare), len(req.success), len(req.failure)) > max_ops:
        raise TooManyOpsError()
    for cmp in req.compare:
        if not cmp.key:
            raise EmptyKeyError()
    for op in req.success:
        _check_op(op, max_ops)
    for op in req.failure:
        _check_op(op, max_ops)


def _check_op(op: RequestOp, max_ops: int) -> None:
    which = op.WhichOneof("request")
    if which == "request_range":
        check_range(op.request_range)
    elif which == "request_put":
        check_put(op.request_put)
    elif which == "request_delete_range":
        check_delete(op.request_delete_range)
    elif which == "request_txn":
        _check_txn_shape(op.request_txn, max_ops)
    else:
        # etcd answers an empty RequestOp with "key not found".
        raise KeyNotFoundError()


# A deleted interval: (begin, end) with end None for a single key and b"" for "to the end".
_Interval = tuple[bytes, bytes | None]


def _hits(dels: list[_Interval], key: bytes) -> bool:
    for begin, end in dels:
        if end is None:
            if key == begin:
                return True
        elif begin <= key and (not end or key < end):
            return True
    return False


def check_intervals(ops: Sequence[RequestOp]) -> tuple[set[bytes], list[_Interval]]:
    """Reject one branch of a txn if it would put a key twice or put a key it deletes.

    Returns the keys put and the intervals deleted by the branch (nested txns included) for
    the caller's level. As in etcd, a key may be put in both branches of a nested txn, since
    only one of them runs, and overlapping deletes are allowed.

    One deliberate difference: a delete with range_end ``b"\0"`` ("every key from here on")
    conflicts with puts of any key at or after its start. etcd builds that interval with the
    literal end "\0", which contains nothing, so it lets such a txn through.
    """
    dels: list[_Interval] = []
    for op in ops:
        if op.WhichOneof("request") == "request_delete_range":
            d = op.request_delete_range
            if not d.range_end:
                dels.append((d.key, None))
            elif d.range_end == b"\x00":
                dels.append((d.key, b""))
            else:
                dels.append((d.key, d.range_end))

    puts: set[bytes] = set()
    for op in ops:
        if op.WhichOneof("request") != "request_txn":
            continue
        puts_then, dels_then = check_intervals(op.request_txn.success)
        puts_else, dels_else = check_intervals(op.request_txn.failure)
        for k in puts_then:
            if k in puts or _hits(dels, k):
                raise DuplicateKeyError()
            puts.add(k)
        for k in puts_else:
            if (k in puts and k not in puts_then) or _hits(dels, k):
                raise DuplicateKeyError()
            puts.add(k)
        dels.extend(dels_then)
        dels.extend(dels_else)

    for op in ops:
        if op.WhichOneof("request") != "request_put":
            continue
        k = op.request_put.key
        if k in puts or _hits(dels, k):
            raise DuplicateKeyError()
        puts.add(k)
    return puts, dels
