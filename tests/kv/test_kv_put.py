"""Put options and their etcd errors."""

from __future__ import annotations

import grpc
import pytest
from kvharness import Harness

from flotilla.node.api.etcdpb import rpc_pb2 as pb
from flotilla.node.kv import errors
from flotilla.node.kv.store import MvccStore


def test_prev_kv(h: Harness) -> None:
    base = h.store.revision
    assert not h.put(b"a", b"1", prev_kv=True).HasField("prev_kv")
    prev = h.put(b"a", b"2", prev_kv=True).prev_kv
    assert (prev.key, prev.value, prev.version, prev.mod_revision) == (b"a", b"1", 1, base + 1)


def test_ignore_value_keeps_value(h: Harness) -> None:
    h.put(b"a", b"keep", lease=7)
    h.put(b"a", ignore_value=True, lease=8)
    kv = h.get(b"a").kvs[0]
    assert (kv.value, kv.lease, kv.version) == (b"keep", 8, 2)


def test_ignore_lease_keeps_lease(h: Harness) -> None:
    h.put(b"a", b"1", lease=7)
    h.put(b"a", b"2", ignore_lease=True)
    kv = h.get(b"a").kvs[0]
    assert (kv.value, kv.lease) == (b"2", 7)


@pytest.mark.parametrize("flag", ["ignore_value", "ignore_lease"])
def test_ignore_flags_need_existing_key(h: Harness, flag: str) -> None:
    base = h.store.revision
    with pytest.raises(errors.KeyNotFoundError) as exc:
        h.put(b"missing", **{flag: True})
    assert exc.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert exc.value.message == "etcdserver: key not found"
    assert h.store.revision == base


def test_validation_errors(h: Harness) -> None:
    base = h.store.revision
    with pytest.raises(errors.EmptyKeyError) as exc:
        h.put(b"", b"v")
    assert exc.value.message == "etcdserver: key is not provided"
    h.put(b"a", b"1")
    with pytest.raises(errors.ValueProvidedError) as v:
        h.put(b"a", b"x", ignore_value=True)
    assert v.value.message == "etcdserver: value is provided"
    with pytest.raises(errors.LeaseProvidedError) as le:
        h.put(b"a", lease=5, ignore_lease=True)
    assert le.value.message == "etcdserver: lease is provided"
    assert h.store.revision == base + 1


def test_unknown_lease_is_rejected_when_lessor_given(h: Harness) -> None:
    h.store.lease_exists = lambda lease: lease == 42
    base = h.store.revision
    h.put(b"a", lease=42)
    with pytest.raises(errors.LeaseNotFoundError) as exc:
        h.put(b"b", lease=43)
    assert exc.value.code == grpc.StatusCode.NOT_FOUND
    assert exc.value.message == "etcdserver: requested lease not found"
    assert h.store.revision == base + 1


def test_store_needs_prefix(h: Harness) -> None:
    with pytest.raises(ValueError):
        MvccStore(h.db, prefix=b"")


def test_put_request_failure_leaves_batch_empty(h: Harness) -> None:
    batch = h.db.write_batch()
    with pytest.raises(errors.KeyNotFoundError):
        h.store.put(pb.PutRequest(key=b"x", ignore_value=True), batch)
    batch.write()
    assert list(h.db.iterator()) == []
