"""The applier: results in entry order, errors as results, and determinism across members."""

from __future__ import annotations

import random
from pathlib import Path

from machine import Machine

from flotilla.node.api.etcdpb import rpc_pb2 as pb
from flotilla.node.kv import errors
from flotilla.node.kv.requests import LeaseExpire


def test_results_follow_entries_and_errors_are_results(m: Machine) -> None:
    base = m.store.revision
    out = m.apply(
        pb.PutRequest(key=b"a", value=b"1"),
        pb.PutRequest(key=b"", value=b"x"),
        pb.DeleteRangeRequest(key=b"a"),
        pb.CompactionRequest(revision=99),
        pb.LeaseGrantRequest(TTL=10, ID=5),
    )
    ids = [rid for rid, _ in out.results]
    assert ids == [i.to_bytes(16, "big") for i in range(1, 6)]
    kinds = [type(r) for _, r in out.results]
    assert kinds == [
        pb.PutResponse,
        errors.EmptyKeyError,
        pb.DeleteRangeResponse,
        errors.FutureRevisionError,
        pb.LeaseGrantResponse,
    ]
    assert out.revision == m.store.revision == base + 2
    assert [(e.type, e.kv.key, e.kv.mod_revision) for e in out.events] == [
        (0, b"a", base + 1),
        (1, b"a", base + 2),
    ]
    assert out.results[4][1].header.revision == base + 2  # type: ignore[attr-defined]


def test_malformed_entry_is_answered_not_fatal(m: Machine) -> None:
    out = m.apply_entries(
        [(1, b"\x09garbage-garbage-garbage"), *m.entries(pb.PutRequest(key=b"k"))]
    )
    assert isinstance(out.results[0][1], errors.MalformedRequestError)
    assert isinstance(out.results[1][1], pb.PutResponse)


def random_requests(rng: random.Random, n: int) -> list[object]:
    keys = [bytes([97 + i]) for i in range(8)]
    reqs: list[object] = []
    for i in range(n):
        roll = rng.random()
        k = rng.choice(keys)
        if roll < 0.4:
            lease = rng.choice([0, 0, 0, 11, 12, 999])
            reqs.append(pb.PutRequest(key=k, value=str(i).encode(), lease=lease))
        elif roll < 0.55:
            reqs.append(pb.DeleteRangeRequest(key=k, range_end=rng.choice([b"", b"e"])))
        elif roll < 0.7:
            reqs.append(
                pb.TxnRequest(
                    compare=[pb.Compare(key=k, target=pb.Compare.VERSION, version=1)],
                    success=[pb.RequestOp(request_put=pb.PutRequest(key=k, value=b"t"))],
                    failure=[pb.RequestOp(request_delete_range=pb.DeleteRangeRequest(key=k))],
                )
            )
        elif roll < 0.8:
            reqs.append(pb.LeaseGrantRequest(TTL=rng.randint(1, 30), ID=rng.choice([0, 11, 12])))
        elif roll < 0.87:
            reqs.append(pb.LeaseRevokeRequest(ID=rng.choice([11, 12, 13])))
        elif roll < 0.93:
            reqs.append(LeaseExpire((11, 12)))
        else:
            # Shifted with the revisions: an empty store is at 1, its first change at 2.
            reqs.append(pb.CompactionRequest(revision=rng.randint(1, i + 1) + 1))
    return reqs


def test_members_fed_the_same_entries_agree(tmp_path: Path) -> None:
    rng = random.Random(7)
    reqs = random_requests(rng, 400)
    a = Machine(tmp_path / "a")
    b = Machine(tmp_path / "b")
    try:
        # Same entries, different batching: the state must not depend on how entries group.
        entries = a.entries(*reqs)
        results_a = []
        for i in range(0, len(entries), 7):
            results_a.extend(a.apply_entries(entries[i : i + 7]).results)
        results_b = []
        for i in range(0, len(entries), 50):
            results_b.extend(b.apply_entries(entries[i : i + 50]).results)
        assert [_norm(r) for r in results_a] == [_norm(r) for r in results_b]
        assert a.store.revision == b.store.revision > 50
        assert a.store.hash_kv() == b.store.hash_kv()
        assert a.lessor.leases() == b.lessor.leases()
        a.reopen()
        assert a.store.hash_kv() == b.store.hash_kv()
        assert a.lessor.leases() == b.lessor.leases()
    finally:
        a.close()
        b.close()


def _norm(result: tuple[bytes, object]) -> tuple[bytes, object]:
    rid, r = result
    if isinstance(r, errors.EtcdError):
        return rid, (type(r), r.message)
    return rid, r
