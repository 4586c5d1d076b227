"""Property test: the store against a plain in-memory model of etcd's KV semantics."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kvharness import Harness

from flotilla.node.api.etcdpb import rpc_pb2 as pb
from flotilla.node.kv import errors

KEYS = [b"a", b"ab", b"b", b"b\xff", b"c"]


@dataclass(frozen=True)
class Val:
    value: bytes
    create: int
    mod: int
    version: int
    lease: int


class Model:
    """etcd semantics, spelled out as simply as possible."""

    def __init__(self) -> None:
        # An empty store is at revision 1 (nothing stored there), so the first change is 2.
        self.rev = 1
        self.compacted = 0
        self.state: dict[bytes, Val] = {}
        self.history: dict[int, dict[bytes, Val]] = {1: {}}

    def _commit(self, state: dict[bytes, Val]) -> None:
        self.rev += 1
        self.state = state
        self.history[self.rev] = dict(state)

    def _put_into(self, state: dict[bytes, Val], key: bytes, value: bytes, lease: int) -> None:
        old = state.get(key)
        main = self.rev + 1
        if old is None:
            state[key] = Val(value, main, main, 1, lease)
        else:
            state[key] = replace(old, value=value, mod=main, version=old.version + 1, lease=lease)

    def put(self, key: bytes, value: bytes, lease: int) -> None:
        state = dict(self.state)
        self._put_into(state, key, value, lease)
        self._commit(state)

    def delete(self, key: bytes, end: bytes) -> int:
        gone = [k for k in self.state if in_range(k, key, end)]
        if gone:
            state = {k: v for k, v in self.state.items() if k not in gone}
            self._commit(state)
        return len(gone)

    def txn(
        self, key: bytes, version: int, puts: list[tuple[bytes, bytes]], dels: list[bytes]
    ) -> bool:
        cur = self.state.get(key)
        ok = (cur.version if cur else 0) == version
        if not ok:
            return False
        state = dict(self.state)
        changed = False
        for k, v in puts:
            self._put_into(state, k, v, 0)
            changed = True
        for k in dels:
            if k in state:
                del state[k]
                changed = True
        if changed:
            self._commit(state)
        return True

    def at(self, rev: int) -> dict[bytes, Val]:
        return self.history[rev]


def in_range(k: bytes, key: bytes, end: bytes) -> bool:
    if not end:
        return k == key
    if end == b"\x00":
        return k >= key
    return key <= k < end


keys = st.sampled_from(KEYS)
ends = st.sampled_from([b"", b"\x00", b"b", b"c", b"zz"])
values = st.binary(max_size=3)
ops = st.one_of(
    st.tuples(st.just("put"), keys, values, st.sampled_from([0, 0, 7])),
    st.tuples(st.just("delete"), keys, ends),
    st.tuples(
        st.just("txn"),
        keys,
        st.integers(0, 2),
        st.lists(st.tuples(keys, values), max_size=3),
        st.lists(keys, max_size=2),
    ),
    st.tuples(st.just("compact"), st.integers(0, 30)),
    st.tuples(st.just("read"), keys, ends, st.integers(0, 30)),
    st.tuples(st.just("reopen")),
)


def kv_tuple(kv: Any) -> tuple[bytes, Val]:
    return kv.key, Val(kv.value, kv.create_revision, kv.mod_revision, kv.version, kv.lease)


def check_read(h: Harness, m: Model, key: bytes, end: bytes, rev: int) -> None:
    try:
        resp = h.get(key, end, revision=rev)
    except errors.FutureRevisionError:
        assert rev > m.rev
        return
    except errors.CompactedError:
        assert 0 < rev < m.compacted
        return
    assert rev <= m.rev and (rev <= 0 or rev >= m.compacted)
    state = m.at(rev if rev > 0 else m.rev)
    want = sorted((k, v) for k, v in state.items() if in_range(k, key, end))
    assert [kv_tuple(kv) for kv in resp.kvs] == want
    assert resp.count == len(want) and resp.header.revision == m.rev


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(ops, max_size=40))
def test_store_matches_model(steps: list[tuple[Any, ...]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        h = Harness(Path(tmp) / "db")
        m = Model()
        try:
            for step in steps:
                kind = step[0]
                if kind == "put":
                    _, key, value, lease = step
                    resp = h.put(key, value, lease=lease)
                    m.put(key, value, lease)
                    assert resp.header.revision == m.rev
                elif kind == "delete":
                    _, key, end = step
                    assert h.delete(key, end).deleted == m.delete(key, end)
                elif kind == "txn":
                    _, key, version, puts, dels = step
                    req = pb.TxnRequest(
                        compare=[
                            pb.Compare(
                                key=key,
                                target=pb.Compare.VERSION,
                                result=pb.Compare.EQUAL,
                                version=version,
                            )
                        ],
                        success=[
                            pb.RequestOp(request_put=pb.PutRequest(key=k, value=v)) for k, v in puts
                        ]
                        + [
                            pb.RequestOp(request_delete_range=pb.DeleteRangeRequest(key=k))
                            for k in dels
                        ],
                    )
                    put_keys = [k for k, _ in puts]
                    if len(set(put_keys)) < len(put_keys) or set(put_keys) & set(dels):
                        try:
                            h.txn(req)
                            raise AssertionError("duplicate keys accepted")
                        except errors.DuplicateKeyError:
                            continue
                    resp = h.txn(req)
                    assert resp.succeeded == m.txn(key, version, puts, dels)
                    assert resp.header.revision == m.rev
                elif kind == "compact":
                    rev = step[1]
                    try:
                        h.compact(rev)
                    except errors.CompactedError:
                        assert rev <= m.compacted
                    except errors.FutureRevisionError:
                        assert rev > m.rev
                    else:
                        assert m.compacted < rev <= m.rev
                        m.compacted = rev
                elif kind == "read":
                    _, key, end, rev = step
                    check_read(h, m, key, end, rev)
                else:
                    h.reopen()
                assert h.store.revision == m.rev
                check_read(h, m, b"\x00", b"\x00", 0)
        finally:
            h.close()
