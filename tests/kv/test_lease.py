"""Leases: replicated grants and revocations, leader-only expiry with a passed-in clock."""

from __future__ import annotations

import pytest
from machine import Machine

from flotilla.node.api.etcdpb import kv_pb2
from flotilla.node.api.etcdpb import rpc_pb2 as pb
from flotilla.node.kv import errors
from flotilla.node.kv.lease import MAX_LEASE_TTL, min_ttl_for
from flotilla.node.kv.requests import LeaseExpire


def grant(m: Machine, ttl: int, lease_id: int = 0) -> pb.LeaseGrantResponse:
    resp = m.one(pb.LeaseGrantRequest(TTL=ttl, ID=lease_id))
    assert isinstance(resp, pb.LeaseGrantResponse), resp
    return resp


def test_grant_with_explicit_id_and_duplicate(m: Machine) -> None:
    resp = grant(m, 30, 7)
    assert (resp.ID, resp.TTL) == (7, 30)
    err = m.one(pb.LeaseGrantRequest(TTL=30, ID=7))
    assert isinstance(err, errors.LeaseExistsError)
    assert err.message == "etcdserver: lease already exists"
    assert [s.ID for s in m.lessor.leases().leases] == [7]


def test_server_chosen_ids_are_deterministic_and_distinct(m: Machine, tmp_path) -> None:
    other = Machine(tmp_path / "other")
    try:
        ids = [grant(m, 10).ID for _ in range(50)]
        assert ids == [grant(other, 10).ID for _ in range(50)]
        assert len(set(ids)) == 50 and all(0 < i < 2**63 for i in ids)
    finally:
        other.close()


def test_ttl_is_raised_to_the_minimum_and_capped(m: Machine) -> None:
    assert grant(m, 1).TTL == m.lessor.min_ttl == 2
    assert grant(m, -5).TTL == 2
    err = m.one(pb.LeaseGrantRequest(TTL=MAX_LEASE_TTL + 1, ID=5))
    assert isinstance(err, errors.LeaseTTLTooLargeError)
    assert min_ttl_for(1.0) == 2 and min_ttl_for(5.0) == 8


def test_put_needs_a_granted_lease(m: Machine) -> None:
    err = m.one(pb.PutRequest(key=b"k", lease=99))
    assert isinstance(err, errors.LeaseNotFoundError)
    grant(m, 10, 99)
    assert isinstance(m.one(pb.PutRequest(key=b"k", lease=99)), pb.PutResponse)


def test_revoke_deletes_attached_keys_in_one_revision(m: Machine) -> None:
    grant(m, 10, 1)
    for k in (b"c", b"a", b"b"):
        m.one(pb.PutRequest(key=k, value=b"v", lease=1))
    m.one(pb.PutRequest(key=b"other", value=b"v"))
    rev = m.store.revision
    out = m.apply(pb.LeaseRevokeRequest(ID=1))
    ((_, resp),) = out.results
    assert isinstance(resp, pb.LeaseRevokeResponse)
    assert resp.header.revision == rev + 1 == m.store.revision
    assert [(e.type, e.kv.key, e.kv.mod_revision) for e in out.events] == [
        (kv_pb2.Event.DELETE, k, rev + 1) for k in (b"a", b"b", b"c")
    ]
    assert [kv.key for kv in m.store.range(pb.RangeRequest(key=b"\0", range_end=b"\0")).kvs] == [
        b"other"
    ]
    assert not m.lessor.exists(1)
    err = m.one(pb.LeaseRevokeRequest(ID=1))
    assert isinstance(err, errors.LeaseNotFoundError)


def test_leases_survive_reopen(m: Machine) -> None:
    grant(m, 10, 1)
    grant(m, 20, 2)
    m.one(pb.PutRequest(key=b"k", lease=2))
    m.one(pb.LeaseRevokeRequest(ID=1))
    m.reopen()
    assert [s.ID for s in m.lessor.leases().leases] == [2]
    ttl = m.lessor.time_to_live(2, keys=True)
    assert (ttl.TTL, ttl.grantedTTL, list(ttl.keys)) == (20, 20, [b"k"])
    assert m.lessor.time_to_live(1).TTL == -1


def test_only_the_leader_expires_and_renews(m: Machine) -> None:
    grant(m, 10, 1)
    assert m.lessor.expired(1e9) == []
    with pytest.raises(errors.NotLeaderError):
        m.lessor.renew(1, 0.0)
    m.lessor.promote(100.0)
    assert m.lessor.expired(109.9) == []
    assert m.lessor.renew(1, 105.0) == 10
    assert m.lessor.time_to_live(1, now=106.0).TTL == 9
    assert m.lessor.expired(114.9) == []
    assert m.lessor.expired(115.0) == [1]
    # Reported once, then again only after the retry interval, in case the proposal was lost.
    assert m.lessor.expired(116.0) == []
    assert m.lessor.expired(118.0) == [1]
    with pytest.raises(errors.LeaseNotFoundError):
        m.lessor.renew(1, 118.0)
    with pytest.raises(errors.LeaseNotFoundError):
        m.lessor.renew(42, 118.0)


def test_expiry_revokes_through_the_log(m: Machine) -> None:
    grant(m, 5, 1)
    grant(m, 50, 2)
    m.one(pb.PutRequest(key=b"a", lease=1))
    m.one(pb.PutRequest(key=b"b", lease=1))
    m.one(pb.PutRequest(key=b"c", lease=2))
    m.lessor.promote(0.0)
    expired = m.lessor.expired(6.0)
    assert expired == [1]
    rev = m.store.revision
    out = m.apply(LeaseExpire(tuple(expired)), LeaseExpire(tuple(expired)))
    assert [r for _, r in out.results] == [LeaseExpire((1,)), LeaseExpire(())]
    assert {e.kv.mod_revision for e in out.events} == {rev + 1}
    assert m.store.keys_for_lease(1) == [] and m.store.keys_for_lease(2) == [b"c"]
    assert m.lessor.expired(1000.0) == [2]


def test_promote_restarts_every_clock(m: Machine) -> None:
    grant(m, 10, 1)
    m.lessor.promote(0.0)
    assert m.lessor.expired(9.0) == []
    m.lessor.demote()
    assert m.lessor.expired(100.0) == []
    # A new term: the lease gets its full TTL again from the promotion, never less.
    m.lessor.promote(100.0)
    assert m.lessor.expired(109.0) == []
    assert m.lessor.expired(110.0) == [1]


def test_leases_granted_while_leader_start_at_the_next_leader_call(m: Machine) -> None:
    m.lessor.promote(0.0)
    grant(m, 10, 1)
    assert m.lessor.expired(50.0) == []  # its clock starts now
    assert m.lessor.expired(59.0) == []
    assert m.lessor.expired(60.0) == [1]


def test_checkpoints_carry_remaining_ttl_to_the_next_leader(m: Machine) -> None:
    grant(m, 100, 1)
    m.lessor.promote(0.0)
    cp = m.lessor.checkpoints(40.0, full=True)
    assert [(c.ID, c.remaining_TTL) for c in cp.checkpoints] == [(1, 60)]
    m.one(cp)
    m.lessor.demote()
    m.lessor.promote(1000.0)
    assert m.lessor.time_to_live(1, now=1000.0).TTL == 60
    assert m.lessor.expired(1059.0) == []
    # Renewal makes the checkpoint stale; the next checkpoints clear it.
    assert m.lessor.renew(1, 1059.5) == 100
    assert m.lessor.expired(1060.0) == []
    cp = m.lessor.checkpoints(1061.0)
    assert [(c.ID, c.remaining_TTL) for c in cp.checkpoints] == [(1, 0)]
    m.one(cp)
    assert m.lessor.get(1).remaining == 0  # type: ignore[union-attr]


def test_many_renewals_keep_the_heap_small(m: Machine) -> None:
    for i in range(1, 11):
        grant(m, 10, i)
    m.lessor.promote(0.0)
    for t in range(1000):
        m.lessor.renew(1 + t % 10, float(t) / 100)
    assert len(m.lessor._heap) <= 4 * 10 + 64
    assert m.lessor.expired(10.0) == []
    assert sorted(m.lessor.expired(30.0)) == list(range(1, 11))


def test_restore_replaces_every_lease(m: Machine, tmp_path) -> None:
    src = Machine(tmp_path / "src")
    try:
        grant(src, 10, 1)
        grant(src, 20, 2)
        grant(m, 30, 3)
        m.lessor.promote(0.0)
        batch = m.db.write_batch()
        m.lessor.restore(list(src.lessor.records()), batch)
        batch.write()
        assert m.lessor.leases() == src.lessor.leases()
        # Clocks start at the first leader call after the restore, with the full TTL.
        assert m.lessor.expired(19.0) == []
        assert m.lessor.expired(29.0) == [1]
        m.reopen()
        assert [s.ID for s in m.lessor.leases().leases] == [1, 2]
        with pytest.raises(errors.CorruptDataError):
            m.lessor.restore([(b"\0" * 8, b"bad")], m.db.write_batch())
    finally:
        src.close()
