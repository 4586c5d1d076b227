"""Corruption checks' decisions, and what a cluster with the CORRUPT alarm still applies."""

from __future__ import annotations

from pathlib import Path

import plyvel
import pytest

from flotilla.node.api.etcdpb import rpc_pb2 as pb
from flotilla.node.kv import requests
from flotilla.node.kv.apply import Applier
from flotilla.node.kv.corruption import Hash, Suspect, initial_mismatches, periodic_suspect
from flotilla.node.kv.errors import CorruptDataError, FutureRevisionError
from flotilla.node.kv.lease import Lessor
from flotilla.node.kv.store import MvccStore

LEADER = 1
AT_10 = Hash(hash=0xAAAA, hash_revision=10, compact_revision=-1, revision=10)


def test_peers_that_agree_raise_nothing() -> None:
    ahead = AT_10._replace(revision=12)  # a peer that applied more since: fine
    after = AT_10._replace(hash=0xBBBB, hash_revision=12, revision=12)
    assert periodic_suspect(LEADER, AT_10, after, {2: AT_10, 3: ahead}) is None


def test_a_peer_with_another_hash_at_the_same_compaction_is_the_suspect() -> None:
    peers = {2: AT_10, 3: AT_10._replace(hash=0xCCCC)}
    suspect = periodic_suspect(LEADER, AT_10, AT_10, peers)
    assert suspect is not None and suspect.member == 3
    assert "0000cccc" in suspect.reason and "0000aaaa" in suspect.reason


def test_a_peer_that_compacted_elsewhere_is_not_compared() -> None:
    # It applied a compaction the leader had not applied when it hashed: the hash differs
    # for that reason alone. The leader has applied it by the end of the check.
    peer = AT_10._replace(hash=0xCCCC, compact_revision=8)
    after = AT_10._replace(compact_revision=8, revision=11)
    assert periodic_suspect(LEADER, AT_10, after, {2: peer}) is None


def test_a_peer_ahead_of_the_leader_or_compacted_further_is_the_suspect() -> None:
    beyond = AT_10._replace(revision=11)
    assert periodic_suspect(LEADER, AT_10, AT_10, {2: beyond}) == Suspect(
        2, "at revision 11, beyond the leader's 10"
    )
    further = AT_10._replace(compact_revision=9)
    suspect = periodic_suspect(LEADER, AT_10, AT_10, {2: further})
    assert suspect is not None and suspect.member == 2 and "compacted" in suspect.reason


def test_a_leader_whose_own_hash_changed_under_it_is_the_suspect() -> None:
    changed = AT_10._replace(hash=0xDDDD)
    assert periodic_suspect(LEADER, AT_10, changed, {2: AT_10}) == Suspect(
        LEADER, "own hash at revision 10 changed"
    )


def test_only_the_first_suspect_is_named() -> None:
    bad = AT_10._replace(hash=0xCCCC)
    suspect = periodic_suspect(LEADER, AT_10, AT_10, {3: bad, 2: bad})
    assert suspect is not None and suspect.member == 2


def test_initial_check_compares_only_peers_compacted_alike() -> None:
    peers = {
        2: AT_10,
        3: AT_10._replace(hash=0xCCCC),
        4: AT_10._replace(hash=0xEEEE, compact_revision=5),
    }
    assert [s.member for s in initial_mismatches(AT_10, peers)] == [3]
    assert initial_mismatches(AT_10, {}) == []


@pytest.fixture
def applier(tmp_path: Path) -> Applier:
    db = plyvel.DB(str(tmp_path / "db"), create_if_missing=True)
    store = MvccStore(db)
    return Applier(store, Lessor(db, store))


def _apply(a: Applier, index: int, req: object) -> object:
    batch = a.store._db.write_batch()
    out = a.apply([(index, requests.encode(index.to_bytes(16, "big"), req))], batch)
    batch.write()
    a.store.batch_written()
    return out.results[0][1]


def test_a_corrupt_cluster_refuses_every_change_alike_and_resumes_when_disarmed(
    applier: Applier,
) -> None:
    assert not isinstance(_apply(applier, 1, pb.PutRequest(key=b"k", value=b"v")), Exception)
    assert not isinstance(_apply(applier, 2, pb.LeaseGrantRequest(ID=7, TTL=60)), Exception)
    revision, hashed = applier.store.revision, applier.store.hash_kv().hash
    applier.corrupt = True
    changes = [
        pb.PutRequest(key=b"k", value=b"w"),
        pb.DeleteRangeRequest(key=b"k"),
        pb.TxnRequest(success=[pb.RequestOp(request_put=pb.PutRequest(key=b"t"))]),
        pb.CompactionRequest(revision=1),
        pb.LeaseGrantRequest(ID=8, TTL=60),
        pb.LeaseRevokeRequest(ID=7),
        requests.LeaseExpire((7,)),
    ]
    for i, req in enumerate(changes, start=3):
        result = _apply(applier, i, req)
        assert isinstance(result, CorruptDataError), (req, result)
        assert result.message == "etcdserver: corrupt cluster"
    assert (applier.store.revision, applier.store.hash_kv().hash) == (revision, hashed)
    assert applier.lessor.exists(7)
    applier.corrupt = False
    assert not isinstance(_apply(applier, 20, pb.PutRequest(key=b"k", value=b"w")), Exception)
    assert applier.store.revision == revision + 1


def test_a_hash_view_is_fixed_when_taken(applier: Applier) -> None:
    _apply(applier, 1, pb.PutRequest(key=b"a", value=b"1"))
    before = applier.store.hash_kv()
    view = applier.store.hash_view()
    _apply(applier, 2, pb.PutRequest(key=b"b", value=b"2"))
    applier.store.compact(pb.CompactionRequest(revision=3), applier.store._db.write_batch())
    assert view() == before
    with pytest.raises(FutureRevisionError):
        applier.store.hash_view(99)
