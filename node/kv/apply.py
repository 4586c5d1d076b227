"""The replicated state machine's apply step: committed entries in, results and events out.

Every member applies the same entries in the same order and must end in the same state, so
nothing here reads a clock, draws a random number or depends on which member runs it: lease
ids chosen by the server derive from the entry's Raft index, and lease expiry arrives as a
LeaseExpire entry decided by the leader. A request that fails (an
:class:`~flotilla.node.kv.errors.EtcdError`) changes nothing and fails alike everywhere; its
error is the result returned to the waiting client.

All changes of one call go into the caller's write batch; the driver adds the Raft applied
index to the same batch and writes it, so a crash never applies an entry twice or half.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from flotilla.node.api.etcdpb.kv_pb2 import Event
from flotilla.node.api.etcdpb.rpc_pb2 import LeaseCheckpointResponse
from flotilla.node.kv import requests
from flotilla.node.kv.errors import CorruptDataError, EtcdError, MalformedRequestError
from flotilla.node.kv.lease import Lessor
from flotilla.node.kv.requests import Kind, LeaseExpire
from flotilla.node.kv.store import MvccStore, WriteBatch


class ApplyOutput(NamedTuple):
    """What one apply call produced.

    ``results`` pairs each request id with its response message, or with the EtcdError the
    client should get, in entry order. ``events`` are the watch events of all the entries in
    revision order; ``revision`` is the store revision after the last entry.
    """

    results: list[tuple[bytes, object]]
    events: list[Event]
    revision: int


REFUSED_WHEN_CORRUPT = frozenset(
    {
        Kind.PUT,
        Kind.DELETE_RANGE,
        Kind.TXN,
        Kind.COMPACTION,
        Kind.LEASE_GRANT,
        Kind.LEASE_REVOKE,
        Kind.LEASE_EXPIRE,
    }
)
"""What a cluster with the CORRUPT alarm raised no longer applies, as etcd: every change of
keys and leases (reads are served outside the log and go on)."""


class Applier:
    """Applies request envelopes (see :mod:`~flotilla.node.kv.requests`) to store and lessor."""

    def __init__(self, store: MvccStore, lessor: Lessor) -> None:
        self.store = store
        self.lessor = lessor
        self.corrupt = False
        """Set while the CORRUPT alarm is raised. Alarms are applied in log order like
        everything else, so every member refuses exactly the same entries."""

    def apply(self, entries: list[tuple[int, bytes]], batch: WriteBatch) -> ApplyOutput:
        """Apply ``(raft index, data)`` of committed normal entries with non-empty data."""
        results: list[tuple[bytes, object]] = []
        events: list[Event] = []
        for index, data in entries:
            try:
                request_id, kind, req = requests.decode(data)
            except MalformedRequestError as err:
                results.append((bytes(data[2 : requests.HEADER_SIZE]), err))
                continue
            try:
                results.append((request_id, self._apply_one(index, kind, req, batch, events)))
            except EtcdError as err:
                results.append((request_id, err))
        return ApplyOutput(results, events, self.store.revision)

    def _apply_one(
        self, index: int, kind: Kind, req: Any, batch: WriteBatch, events: list[Event]
    ) -> object:
        store = self.store
        if self.corrupt and kind in REFUSED_WHEN_CORRUPT:
            raise CorruptDataError("the CORRUPT alarm is raised")
        if kind is Kind.PUT:
            applied: Any = store.put(req, batch)
        elif kind is Kind.TXN:
            applied = store.txn(req, batch)
        elif kind is Kind.DELETE_RANGE:
            applied = store.delete_range(req, batch)
        elif kind is Kind.LEASE_REVOKE:
            applied = self.lessor.revoke(req.ID, batch)
        elif kind is Kind.COMPACTION:
            applied = store.compact(req, batch)
        elif kind is Kind.LEASE_GRANT:
            resp: Any = self.lessor.grant(req, index, batch)
            resp.header.revision = store.revision
            return resp
        elif kind is Kind.LEASE_EXPIRE:
            return self._expire(req, batch, events)
        elif kind is Kind.LEASE_CHECKPOINT:
            cp: LeaseCheckpointResponse = self.lessor.checkpoint(req, batch)
            cp.header.revision = store.revision
            return cp
        else:  # pragma: no cover - decode() only yields known kinds
            raise MalformedRequestError(f"no apply for {kind!r}")
        if applied.events:
            events.extend(applied.events)
        return applied.response

    def _expire(self, req: LeaseExpire, batch: WriteBatch, events: list[Event]) -> LeaseExpire:
        """Revoke each listed lease that still exists, each in its own revision (as etcd)."""
        revoked = []
        for lease_id in req.ids:
            if self.lessor.exists(lease_id):
                applied = self.lessor.revoke(lease_id, batch)
                events.extend(applied.events)
                revoked.append(lease_id)
        return LeaseExpire(tuple(revoked))
