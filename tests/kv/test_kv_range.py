"""Range options, each against etcd's documented behaviour."""

from __future__ import annotations

import grpc
import pytest
from kvharness import Harness, kvs

from flotilla.node.api.etcdpb import rpc_pb2 as pb
from flotilla.node.kv import errors


@pytest.fixture
def filled(h: Harness) -> Harness:
    # The empty store is at rev 1, as etcd's.
    # rev 3..7: a=1, b=22, c=3, d=4 (d created at 6), then b rewritten at 7 with value "0".
    h.put(b"x/skip")  # rev 2, outside the tested prefix
    h.put(b"a", b"1")  # 3
    h.put(b"b", b"22")  # 4
    h.put(b"c", b"3")  # 5
    h.put(b"d", b"4")  # 6
    h.put(b"b", b"0")  # 7
    return h


def test_range_end_conventions(filled: Harness) -> None:
    assert kvs(filled.get(b"b")) == [(b"b", b"0")]
    assert kvs(filled.get(b"b", b"d")) == [(b"b", b"0"), (b"c", b"3")]
    assert [k for k, _ in kvs(filled.get(b"c", b"\x00"))] == [b"c", b"d", b"x/skip"]
    assert filled.get(b"\x00", b"\x00").count == 5
    assert filled.get(b"x/", b"x0").count == 1  # prefix "x/" via range_end = "x/" + 1
    assert filled.get(b"d", b"a").count == 0  # range_end before key: empty
    assert filled.get(b"zz").count == 0


def test_limit_sets_more_and_count(filled: Harness) -> None:
    resp = filled.get(b"a", b"e", limit=2)
    assert kvs(resp) == [(b"a", b"1"), (b"b", b"0")]
    assert resp.more and resp.count == 4
    resp = filled.get(b"a", b"e", limit=4)
    assert len(resp.kvs) == 4 and not resp.more and resp.count == 4
    resp = filled.get(b"a", b"e", limit=0)
    assert len(resp.kvs) == 4 and not resp.more


def test_count_only(filled: Harness) -> None:
    resp = filled.get(b"a", b"e", count_only=True, limit=1)
    assert resp.count == 4 and list(resp.kvs) == [] and not resp.more
    assert filled.get(b"a", count_only=True).count == 1


def test_keys_only(filled: Harness) -> None:
    resp = filled.get(b"a", b"c", keys_only=True)
    assert [(kv.key, kv.value, kv.version) for kv in resp.kvs] == [(b"a", b"", 1), (b"b", b"", 2)]
    single = filled.get(b"b", keys_only=True).kvs[0]
    assert single.value == b"" and single.mod_revision == 7


@pytest.mark.parametrize(
    ("target", "order", "expected"),
    [
        (pb.RangeRequest.KEY, pb.RangeRequest.DESCEND, [b"d", b"c", b"b", b"a"]),
        (pb.RangeRequest.KEY, pb.RangeRequest.ASCEND, [b"a", b"b", b"c", b"d"]),
        (pb.RangeRequest.VALUE, pb.RangeRequest.ASCEND, [b"b", b"a", b"c", b"d"]),
        (pb.RangeRequest.VALUE, pb.RangeRequest.NONE, [b"b", b"a", b"c", b"d"]),
        (pb.RangeRequest.MOD, pb.RangeRequest.DESCEND, [b"b", b"d", b"c", b"a"]),
        (pb.RangeRequest.CREATE, pb.RangeRequest.DESCEND, [b"d", b"c", b"b", b"a"]),
        (pb.RangeRequest.VERSION, pb.RangeRequest.DESCEND, [b"b", b"a", b"c", b"d"]),
    ],
)
def test_sort(filled: Harness, target: int, order: int, expected: list[bytes]) -> None:
    resp = filled.get(b"a", b"e", sort_target=target, sort_order=order)
    assert [kv.key for kv in resp.kvs] == expected


def test_sort_then_limit(filled: Harness) -> None:
    resp = filled.get(
        b"a",
        b"e",
        sort_target=pb.RangeRequest.MOD,
        sort_order=pb.RangeRequest.DESCEND,
        limit=1,
    )
    assert [kv.key for kv in resp.kvs] == [b"b"] and resp.more and resp.count == 4


def test_revision_filters(filled: Harness) -> None:
    def keys(**kw: int) -> list[bytes]:
        return [kv.key for kv in filled.get(b"a", b"e", **kw).kvs]

    assert keys(min_mod_revision=6) == [b"b", b"d"]
    assert keys(max_mod_revision=5) == [b"a", b"c"]
    assert keys(min_create_revision=5) == [b"c", b"d"]
    assert keys(max_create_revision=4) == [b"a", b"b"]
    assert keys(min_create_revision=4, max_create_revision=5) == [b"b", b"c"]
    # Filters do not change count, which reflects the whole range.
    resp = filled.get(b"a", b"e", min_mod_revision=7, limit=1)
    assert resp.count == 4 and [kv.key for kv in resp.kvs] == [b"b"] and not resp.more
    assert filled.get(b"a", max_mod_revision=2).kvs == []


def test_read_at_old_revision(filled: Harness) -> None:
    resp = filled.get(b"a", b"e", revision=4)
    assert kvs(resp) == [(b"a", b"1"), (b"b", b"22")]
    assert resp.header.revision == 7  # the header always carries the current revision
    assert filled.get(b"b", revision=6).kvs[0].value == b"22"
    assert filled.get(b"a", b"e", revision=4, count_only=True).count == 2
    assert filled.get(b"a", revision=2).count == 0
    assert filled.get(b"\x00", b"\x00", revision=1).count == 0


def test_future_revision(filled: Harness) -> None:
    with pytest.raises(errors.FutureRevisionError) as exc:
        filled.get(b"a", revision=8)
    assert exc.value.code == grpc.StatusCode.OUT_OF_RANGE
    assert exc.value.message == "etcdserver: mvcc: required revision is a future revision"


def test_invalid_requests(h: Harness) -> None:
    with pytest.raises(errors.EmptyKeyError):
        h.get(b"")
    with pytest.raises(errors.InvalidSortOptionError) as exc:
        h.get(b"a", sort_order=99)  # type: ignore[arg-type]
    assert exc.value.message == "etcdserver: invalid sort option"
    with pytest.raises(errors.InvalidSortOptionError):
        h.get(b"a", sort_target=42)  # type: ignore[arg-type]
