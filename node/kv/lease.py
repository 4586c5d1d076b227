"""Leases: replicated grants and revocations, expiry clocks run by the leader alone.

Two kinds of state live here, and the split is the point of the module:

* **Replicated** (changed only by applying log entries, identical on every member): which
  leases exist, their granted TTL, and an optional checkpointed remaining TTL. They are stored
  in the same LevelDB as the key-value store, under their own prefix, and every change is
  staged in the apply batch so it commits atomically with the Raft applied index.
* **Leader-local** (never replicated): each lease's deadline on the monotonic clock. Only the
  leader (the *primary* lessor) keeps deadlines; it finds expired leases and proposes a
  LeaseExpire entry, so revocation itself is a replicated, deterministic apply.

No method reads a clock: the caller passes ``now`` (monotonic seconds), so expiry is testable
in microseconds. When this member becomes leader, :meth:`Lessor.promote` restarts every
lease's clock from ``now`` (with its full TTL, or the checkpointed remaining TTL), so a
failover can extend a lease but never expire it early. Leases granted while this member is
leader start counting at the first leader-side call after the grant is applied
(``expired``/``renew``/``time_to_live``), because apply has no clock.
"""

from __future__ import annotations

import heapq
import math
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Final

from flotilla.node.api.etcdpb.rpc_pb2 import (
    LeaseCheckpointRequest,
    LeaseCheckpointResponse,
    LeaseGrantRequest,
    LeaseGrantResponse,
    LeaseLeasesResponse,
    LeaseRevokeResponse,
    LeaseTimeToLiveResponse,
)
from flotilla.node.kv import codec
from flotilla.node.kv.errors import (
    CorruptDataError,
    LeaseExistsError,
    LeaseNotFoundError,
    LeaseTTLTooLargeError,
    NotLeaderError,
)
from flotilla.node.kv.store import Applied, MvccStore, WriteBatch

MAX_LEASE_TTL: Final = 9_000_000_000
"""etcd's ``MaxLeaseTTL`` in seconds (about 285 years)."""

DEFAULT_MIN_TTL: Final = 2
"""The shortest lease, in seconds: etcd's ``ceil(1.5 x election timeout)`` at its defaults
(1 s election timeout). A lease shorter than a leader election could expire only because the
cluster was electing a leader; the driver should pass ``min_ttl_for(election_timeout)``."""

EXPIRE_RETRY: Final = 3.0
"""Seconds before an expired lease is reported again if its revocation has not applied
(etcd's expiredLeaseRetryInterval): the LeaseExpire proposal may have been lost."""

_ID = struct.Struct(">q")
_RECORD = struct.Struct(">qq")
_INT63: Final = (1 << 63) - 1
_MASK64: Final = (1 << 64) - 1


def min_ttl_for(election_timeout: float) -> int:
    """etcd's minimum lease TTL for an election timeout in seconds: ceil(1.5 x timeout)."""
    return max(1, math.ceil(1.5 * election_timeout))


@dataclass(slots=True)
class Lease:
    """One granted lease. ``deadline`` is leader-local (None: clock not running here)."""

    id: int
    ttl: int
    remaining: int = 0
    deadline: float | None = None


def _auto_id(index: int) -> int:
    """A lease id derived from the Raft index of the grant: the same on every member.

    splitmix64's finalizer spreads consecutive indexes over the id space, so ids look like
    etcd's (random 63-bit) instead of small counters that collide with hand-picked ids.
    """
    x = (index * 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return (x ^ (x >> 31)) & _INT63


class Lessor:
    """The lease table of one member, on the store's LevelDB under ``prefix``.

    Creating a lessor wires it into ``store`` as the ``lease_exists`` check, so a Put that
    attaches an unknown lease fails with etcd's "requested lease not found".

    ``min_ttl`` shapes replicated state (granted TTLs), so it must be the same on every
    member: derive it from the cluster-wide election timeout, not a per-member setting.
    """

    def __init__(
        self,
        db: Any,
        store: MvccStore,
        *,
        prefix: bytes = b"ls/",
        min_ttl: int = DEFAULT_MIN_TTL,
        expire_retry: float = EXPIRE_RETRY,
    ) -> None:
        if not prefix:
            raise ValueError("the lessor needs a non-empty key prefix of its own")
        self._db = db
        self._store = store
        self._prefix = prefix
        self.min_ttl = min_ttl
        self._expire_retry = expire_retry
        self._leases: dict[int, Lease] = {}
        self._primary = False
        self._heap: list[tuple[float, int]] = []
        self._expiring: dict[int, float] = {}
        self._stale_checkpoints: set[int] = set()
        self._unscheduled: set[int] = set()
        self._load()
        store.lease_exists = self.exists

    # ------------------------------------------------------------------ records

    def _key(self, lease_id: int) -> bytes:
        return self._prefix + _ID.pack(lease_id)

    def _encode(self, key: bytes, lease: Lease) -> bytes:
        body = _RECORD.pack(lease.ttl, lease.remaining)
        crc: int = codec.crc32(body, codec.crc32(key))
        return crc.to_bytes(4, "big") + body

    def _decode(self, key: bytes, value: bytes) -> Lease:
        plen = len(self._prefix)
        if len(key) != plen + _ID.size or len(value) != 4 + _RECORD.size:
            raise CorruptDataError(f"malformed lease record {key!r}")
        body = value[4:]
        if int.from_bytes(value[:4], "big") != codec.crc32(body, codec.crc32(key)):
            raise CorruptDataError(f"lease record {key!r} fails its checksum")
        (lease_id,) = _ID.unpack_from(key, plen)
        ttl, remaining = _RECORD.unpack(body)
        return Lease(lease_id, ttl, remaining)

    def _load(self) -> None:
        for key, value in self._db.iterator(prefix=self._prefix):
            lease = self._decode(key, value)
            self._leases[lease.id] = lease

    def _save(self, lease: Lease, batch: WriteBatch) -> None:
        key = self._key(lease.id)
        batch.put(key, self._encode(key, lease))

    def records(self) -> Iterator[tuple[bytes, bytes]]:
        """Every lease record (key without prefix, value), for a state-machine snapshot."""
        for lease in sorted(self._leases.values(), key=lambda le: le.id):
            key = self._key(lease.id)
            yield key[len(self._prefix) :], self._encode(key, lease)

    def restore(self, records: Iterable[tuple[bytes, bytes]], batch: WriteBatch) -> None:
        """Replace every lease with ``records`` (from :meth:`records`), staged in ``batch``.

        Used when a Raft snapshot is installed. Every record is verified before anything
        changes. On the leader, the restored leases' clocks start at the next leader call.
        """
        leases: dict[int, Lease] = {}
        for rel, value in records:
            key = self._prefix + rel
            lease = self._decode(key, value)
            leases[lease.id] = lease
        for key in self._db.iterator(prefix=self._prefix, include_value=False):
            batch.delete(key)
        for lease in leases.values():
            self._save(lease, batch)
        self._leases = leases
        self._heap = []
        self._expiring.clear()
        self._stale_checkpoints.clear()
        self._unscheduled = set(leases) if self._primary else set()

    # ------------------------------------------------------------------ queries

    @property
    def primary(self) -> bool:
        """Whether this member runs the expiry clocks (it is the leader)."""
        return self._primary

    def exists(self, lease_id: int) -> bool:
        return lease_id in self._leases

    def get(self, lease_id: int) -> Lease | None:
        return self._leases.get(lease_id)

    def __len__(self) -> int:
        return len(self._leases)

    def leases(self) -> LeaseLeasesResponse:
        """etcd's LeaseLeases: every granted lease id (ascending)."""
        resp = LeaseLeasesResponse()
        for lease_id in sorted(self._leases):
            resp.leases.add(ID=lease_id)
        return resp

    def time_to_live(
        self, lease_id: int, keys: bool = False, now: float | None = None
    ) -> LeaseTimeToLiveResponse:
        """etcd's LeaseTimeToLive; an unknown lease answers TTL -1, as etcd does.

        The remaining TTL is exact on the leader; elsewhere no clock runs, so it is the
        checkpointed remaining TTL if any, else the granted TTL.
        """
        resp = LeaseTimeToLiveResponse(ID=lease_id)
        lease = self._leases.get(lease_id)
        if lease is None:
            resp.TTL = -1
            return resp
        resp.grantedTTL = lease.ttl
        if self._primary and now is not None:
            deadline = self._schedule(lease, now)
            resp.TTL = max(0, int(deadline - now))
        else:
            resp.TTL = lease.remaining or lease.ttl
        if keys:
            resp.keys.extend(self._store.keys_for_lease(lease_id))
        return resp

    # ------------------------------------------------------------------ replicated changes

    def grant(self, req: LeaseGrantRequest, index: int, batch: WriteBatch) -> LeaseGrantResponse:
        """Apply LeaseGrant from the entry at Raft ``index``.

        ID 0 asks the server to choose: the id is derived from ``index`` (the next free one),
        so every member picks the same id. The TTL is raised to ``min_ttl``.
        """
        if req.TTL > MAX_LEASE_TTL:
            raise LeaseTTLTooLargeError()
        lease_id = req.ID
        if lease_id == 0:
            lease_id = _auto_id(index)
            while lease_id == 0 or lease_id in self._leases:
                lease_id = (lease_id + 1) & _INT63
        elif lease_id in self._leases:
            raise LeaseExistsError()
        lease = Lease(lease_id, max(req.TTL, self.min_ttl))
        self._save(lease, batch)
        self._leases[lease_id] = lease
        if self._primary:
            self._unscheduled.add(lease_id)
        return LeaseGrantResponse(ID=lease_id, TTL=lease.ttl)

    def revoke(self, lease_id: int, batch: WriteBatch) -> Applied[LeaseRevokeResponse]:
        """Apply LeaseRevoke: delete the attached keys in one revision, then the lease."""
        if lease_id not in self._leases:
            raise LeaseNotFoundError()
        applied = self._store.revoke_lease(lease_id, batch)
        batch.delete(self._key(lease_id))
        del self._leases[lease_id]
        self._expiring.pop(lease_id, None)
        self._stale_checkpoints.discard(lease_id)
        resp = LeaseRevokeResponse()
        resp.header.revision = applied.revision
        return Applied(resp, applied.events, applied.revision)

    def checkpoint(self, req: LeaseCheckpointRequest, batch: WriteBatch) -> LeaseCheckpointResponse:
        """Apply LeaseCheckpoint: persist remaining TTLs so a new leader does not restart them.

        A remaining TTL of 0 clears the checkpoint (the lease was renewed since).
        """
        for cp in req.checkpoints:
            lease = self._leases.get(cp.ID)
            if lease is None:
                continue
            lease.remaining = max(0, min(cp.remaining_TTL, lease.ttl))
            self._save(lease, batch)
            if lease.remaining == 0:
                self._stale_checkpoints.discard(lease.id)
        return LeaseCheckpointResponse()

    # ------------------------------------------------------------------ leader-local clocks

    def promote(self, now: float) -> None:
        """This member became leader: (re)start every lease's clock from ``now``."""
        self._primary = True
        self._heap = []
        self._expiring.clear()
        self._unscheduled.clear()
        for lease in self._leases.values():
            lease.deadline = now + (lease.remaining or lease.ttl)
            self._heap.append((lease.deadline, lease.id))
        heapq.heapify(self._heap)

    def demote(self) -> None:
        """This member is no longer leader: stop every clock."""
        self._primary = False
        self._heap = []
        self._expiring.clear()
        self._stale_checkpoints.clear()
        self._unscheduled.clear()
        for lease in self._leases.values():
            lease.deadline = None

    def _schedule(self, lease: Lease, now: float) -> float:
        if lease.deadline is None:
            lease.deadline = now + (lease.remaining or lease.ttl)
            heapq.heappush(self._heap, (lease.deadline, lease.id))
        return lease.deadline

    def _start_new_clocks(self, now: float) -> None:
        # Leases granted since the last call have no deadline yet.
        for lease_id in self._unscheduled:
            lease = self._leases.get(lease_id)
            if lease is not None:
                self._schedule(lease, now)
        self._unscheduled.clear()

    def renew(self, lease_id: int, now: float) -> int:
        """LeaseKeepAlive on the leader: restart the lease's clock; return its TTL."""
        if not self._primary:
            raise NotLeaderError()
        lease = self._leases.get(lease_id)
        if lease is None or lease_id in self._expiring:
            raise LeaseNotFoundError()
        deadline = self._schedule(lease, now)
        if deadline <= now:
            # Expired but not yet revoked: etcd answers "not found" as well.
            raise LeaseNotFoundError()
        lease.deadline = now + lease.ttl
        heapq.heappush(self._heap, (lease.deadline, lease_id))
        if lease.remaining:
            self._stale_checkpoints.add(lease_id)
        if len(self._heap) > 4 * len(self._leases) + 64:
            self._heap = [
                (le.deadline, le.id) for le in self._leases.values() if le.deadline is not None
            ]
            heapq.heapify(self._heap)
        return lease.ttl

    def expired(self, now: float) -> list[int]:
        """Leases whose deadline has passed (leader only), for a LeaseExpire proposal.

        A lease is reported once, then again every ``expire_retry`` seconds until its
        revocation applies, in case the proposal was lost.
        """
        if not self._primary:
            return []
        self._start_new_clocks(now)
        out = []
        for lease_id, retry_at in self._expiring.items():
            if retry_at <= now:
                out.append(lease_id)
        for lease_id in out:
            self._expiring[lease_id] = now + self._expire_retry
        heap = self._heap
        while heap and heap[0][0] <= now:
            deadline, lease_id = heapq.heappop(heap)
            lease = self._leases.get(lease_id)
            if lease is None or lease.deadline != deadline or lease_id in self._expiring:
                continue  # revoked, renewed since, or already reported
            out.append(lease_id)
            self._expiring[lease_id] = now + self._expire_retry
        return out

    def checkpoints(self, now: float, *, full: bool = False) -> LeaseCheckpointRequest:
        """Checkpoints for the leader to propose (optional, as in etcd).

        Always clears the checkpoints of leases renewed since they were checkpointed (so a
        later leader does not use a stale, too short remaining TTL); with ``full``, also
        records every lease's current remaining TTL.
        """
        req = LeaseCheckpointRequest()
        if not self._primary:
            return req
        for lease_id in sorted(self._stale_checkpoints):
            req.checkpoints.add(ID=lease_id, remaining_TTL=0)
        if full:
            for lease in self._leases.values():
                if lease.id not in self._stale_checkpoints:
                    left = math.ceil(self._schedule(lease, now) - now)
                    req.checkpoints.add(ID=lease.id, remaining_TTL=max(1, left))
        return req
