"""The replicated state machine as the driver sees it, and the member as the services see it.

``KvStateMachine`` joins the MVCC store, the lessor, the applier and the watch hub: the
driver hands it committed entries with a write batch (which also receives the applied
index), snapshots and restores it, and tells it when this member gains or loses leadership.
It also implements the services' ``NodeHandle``, turning client requests into proposals and
reads into ReadIndex barriers, and runs the leader's timer duties: lease expiry and watch
progress notifications.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import struct
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING, Any

from .. import backup, statesnap
from ..api.etcdpb import rpc_pb2 as pb
from ..api.services import add_services
from ..config import NodeConfig
from ..server import CORRUPT, NOSPACE
from ..transport import renewals
from ..transport.pb import raftpeer_pb2 as peer_pb
from ..transport.stream import describe_error
from . import autocompact, corruption, requests
from .apply import Applier
from .errors import (
    EtcdError,
    LeaseNotFoundError,
    NoLeaderError,
    NoSpaceError,
    NotLeaderError,
    RequestTimeoutError,
)
from .lease import Lessor, min_ttl_for
from .store import MvccStore, SnapshotLoader, StoreView
from .watch import WatchHub

if TYPE_CHECKING:
    from ..server import RaftNode

log = logging.getLogger("flotilla.node")

LEASE_PREFIX = b"ls/"
STATE_PREFIXES = (LEASE_PREFIX, b"c/")
_LEN = struct.Struct(">Q")
HOUSEKEEPING_SECONDS = 0.1
PEER_HASH_WAIT_SECONDS = 5.0
"""How long a member asked for its hash waits to apply what the leader had applied; a
member further behind is left out of that check, as etcd leaves out a slow one."""
PEER_HASH_TIMEOUT_SECONDS = 60.0
"""How long the leader waits for a peer's hash (hashing a large store takes a while)."""


class StateLoader:
    """A state snapshot (see :meth:`KvStateMachine.dump_stream`) read as it arrives: the
    store's part goes to the store's loader piece by piece, the other records are read at
    the end. Raises CorruptDataError, at the latest from ``finish``, for damaged data."""

    def __init__(self) -> None:
        self.store = SnapshotLoader()
        self.records: list[tuple[bytes, bytes]] = []
        self._head = b""
        self._store_left: int | None = None  # bytes of the store's part still to come
        self._rest: list[bytes] = []

    def feed(self, data: bytes) -> None:
        if self._store_left is None:
            data = self._head + data
            if len(data) < _LEN.size:
                self._head = data
                return
            (self._store_left,) = _LEN.unpack_from(data, 0)
            data = data[_LEN.size :]
        if self._store_left:
            part = data[: self._store_left]
            self._store_left -= len(part)
            self.store.feed(part)
            data = data[len(part) :]
        if data:
            self._rest.append(data)

    def finish(self) -> None:
        if self._store_left != 0:
            raise statesnap.SnapshotCorrupt("state snapshot is truncated")
        self.store.finish()
        self.records = statesnap.parse(b"".join(self._rest))


class KvStateMachine:
    def __init__(self, db: Any, cfg: NodeConfig) -> None:
        self.db = db
        self.cfg = cfg
        self.store = MvccStore(db)
        self.lessor = Lessor(
            db, self.store, prefix=LEASE_PREFIX, min_ttl=min_ttl_for(cfg.election_timeout_ms / 1000)
        )
        self.applier = Applier(self.store, self.lessor)
        self.watch_hub = WatchHub(self.store)
        self.store.events_prev_kv = self.watch_hub.needs_prev_kv
        self.node: RaftNode | None = None
        self.db_size = 0
        self._pending_events: tuple[list[Any], int] | None = None
        self._background: list[asyncio.Task[None]] = []
        self._auto_compaction = autocompact.policy(
            cfg.auto_compaction_mode, cfg.auto_compaction_retention
        )

    def attach(self, node: RaftNode) -> None:
        self.node = node

    # -- what the driver calls ---------------------------------------------------------------

    def apply(self, entries: list[tuple[int, bytes]], batch: Any) -> list[tuple[bytes, object]]:
        self.store.events_prev_kv = self.watch_hub.needs_prev_kv
        self.applier.corrupt = self.node is not None and self.node.corrupt
        out = self.applier.apply(entries, batch)
        # One write batch may cover several apply calls (the driver splits a batch around
        # configuration changes): keep every call's events until the batch is written.
        earlier = self._pending_events[0] if self._pending_events is not None else []
        self._pending_events = ([*earlier, *out.events], out.revision)
        return list(out.results)

    def batch_written(self) -> None:
        self.store.batch_written()
        pending = self._pending_events
        if pending is not None:
            self._pending_events = None
            events, revision = pending
            # Only after the batch is durable may watchers see its events.
            self.watch_hub.notify(events, revision)

    def view(self) -> StoreView:
        """Fix the state to snapshot (on the loop, quickly); ``dump`` makes the bytes, in any
        thread, as often as asked."""
        return self.store.freeze()

    def dump(self, view: StoreView) -> bytes:
        size, pieces = self.dump_stream(view)
        data = b"".join(pieces)
        assert len(data) == size
        return data

    def dump_stream(self, view: StoreView) -> tuple[int, Iterator[bytes]]:
        """The snapshot of ``view``: its length, and its bytes in pieces made as they are
        taken (in any one thread at a time)."""
        store_size, store_part = view.stream()
        # The other records from the same LevelDB snapshot as the store's.
        rest = statesnap.dump(view.dbsnap, STATE_PREFIXES)
        pieces = itertools.chain((_LEN.pack(store_size),), store_part, (rest,))
        return _LEN.size + store_size + len(rest), pieces

    def restore(
        self, data: bytes, extra: list[tuple[bytes, bytes]], loaded: StateLoader | None = None
    ) -> None:
        """Install a snapshot received from the leader, in a write of its own."""
        batch = self.db.write_batch(sync=True)
        self.stage_restore(batch, data, extra, loaded)
        batch.write()
        self.restored()

    def stage_restore(
        self,
        batch: Any,
        data: bytes,
        extra: list[tuple[bytes, bytes]],
        loaded: StateLoader | None = None,
    ) -> None:
        """Put into ``batch`` the replacement of the whole state by a snapshot, ``extra``
        records with it, and serve that state from now on; call :meth:`restored` once the
        batch is written. ``loaded`` is the snapshot already read (as it arrived), else
        ``data`` is read now; a damaged one raises CorruptDataError and changes nothing."""
        if loaded is None:
            loaded = self.loader()
            loaded.feed(data)
            loaded.finish()
        self.store.install(loaded.store, batch)
        for prefix in STATE_PREFIXES:
            if prefix != LEASE_PREFIX:
                for key in self.db.iterator(prefix=prefix, include_value=False):
                    batch.delete(key)
        # The snapshot holds the records under their full keys; the lessor takes them without
        # its prefix, as ``Lessor.records`` gives them (it used to get "ls/ls/..." and refuse
        # every snapshot with a lease in it as corrupt, so a member catching up crashed).
        records = loaded.records
        leases = [(k[len(LEASE_PREFIX) :], v) for k, v in records if k.startswith(LEASE_PREFIX)]
        self.lessor.restore(leases, batch)
        for k, v in records:
            if not k.startswith(LEASE_PREFIX):
                batch.put(k, v)
        for k, v in extra:
            batch.put(k, v)

    def restored(self) -> None:
        """The batch of :meth:`stage_restore` is written."""
        self.store.batch_written()
        self.watch_hub.restored()

    @staticmethod
    def loader() -> StateLoader:
        """Something to read a snapshot into as it arrives, for :meth:`restore`."""
        return StateLoader()

    def on_leader(self, leader: bool) -> None:
        if leader:
            # Every remaining TTL restarts now: no lease expires early because of a failover.
            self.lessor.promote(time.monotonic())
        else:
            self.lessor.demote()

    async def hash_kv(self, revision: int) -> pb.HashKVResponse:
        """HashKV, computed off the event loop: hashing a large store takes a while."""
        return await asyncio.to_thread(self.store.hash_view(revision))

    async def hash_for_peer(self, revision: int, applied_index: int) -> peer_pb.PeerHashResponse:
        """A peer (the leader, or a starting member) asks for our hash at ``revision``."""
        node = self.node
        assert node is not None
        if applied_index:
            await node.wait_applied(applied_index, PEER_HASH_WAIT_SECONDS)
        resp = await self.hash_kv(revision)
        return peer_pb.PeerHashResponse(
            hash=resp.hash,
            hash_revision=resp.hash_revision,
            compact_revision=resp.compact_revision,
            revision=resp.header.revision,
        )

    async def check_corruption(self) -> corruption.Suspect | None:
        """The leader's periodic corruption check (see :mod:`.corruption`); raises the
        CORRUPT alarm for the member it finds, and returns it."""
        node = self.node
        assert node is not None
        # The hash's revision and the applied index are taken at the same moment, so a peer
        # that waits for the index holds the revision.
        index = node.core.applied
        before = corruption.from_hash_kv(await asyncio.to_thread(self.store.hash_view(0)))
        peers = sorted(m for m in node.members if m != node.member_id)
        answers = await asyncio.gather(
            *(self._peer_hash(m, before.hash_revision, index) for m in peers)
        )
        # After the barrier the leader has applied whatever any peer had when it answered.
        await node.read_barrier()
        after = corruption.from_hash_kv(await self.hash_kv(0))
        heard = {m: h for m, h in zip(peers, answers, strict=True) if h is not None}
        suspect = corruption.periodic_suspect(node.member_id, before, after, heard)
        if suspect is None:
            log.info(
                "corruption check: %d of %d peers agree at revision %d",
                len(heard),
                len(peers),
                before.hash_revision,
            )
            return None
        log.error("corruption check: member %x: %s", suspect.member, suspect.reason)
        await node.set_alarm("activate", suspect.member, CORRUPT)
        return suspect

    async def _peer_hash(self, member: int, revision: int, index: int) -> corruption.Hash | None:
        node = self.node
        assert node is not None
        try:
            resp = await node.transport.peer_hash(
                member, revision, index, PEER_HASH_TIMEOUT_SECONDS
            )
        except Exception as exc:  # unreachable, behind, compacted, an earlier version
            why = describe_error(exc)
            log.warning("corruption check: no hash from member %x: %s", member, why)
            return None
        return corruption.from_peer(resp)

    async def _corruption_checks(self, period: float) -> None:
        while True:
            await asyncio.sleep(period)
            node = self.node
            if node is None or not node.is_leader:
                continue
            try:
                await self.check_corruption()
            except Exception as exc:  # lost the leadership midway, say: the next period
                log.warning("corruption check not finished: %s", exc)

    async def snapshot_stream(self) -> AsyncIterator[bytes]:
        """A backup for ``etcdctl snapshot save`` (see ``flotilla.node.backup``)."""
        assert self.node is not None
        view = self.view()
        data = await asyncio.to_thread(lambda: backup.encode(self.dump(view)))
        for i in range(0, len(data), 1 << 20):
            yield data[i : i + (1 << 20)]

    def add_services(self, server: Any, header: Callable[[], pb.ResponseHeader]) -> None:
        add_services(server, self)
        loop = asyncio.get_running_loop()
        self._background.append(loop.create_task(self._timers()))
        if self.cfg.corrupt_check_seconds > 0:
            checks = self._corruption_checks(self.cfg.corrupt_check_seconds)
            self._background.append(loop.create_task(checks))

    def close(self) -> None:
        for task in self._background:
            task.cancel()

    def measure_db(self) -> int:
        path = self.cfg.data_dir / "db"
        self.db_size = sum(f.stat().st_size for f in path.iterdir() if f.is_file())
        return self.db_size

    async def _timers(self) -> None:
        """The leader proposes expiries of leases; every member ticks the watch hub and
        measures its database (for the space quota) about once a second."""
        rounds = 0
        while True:
            await asyncio.sleep(HOUSEKEEPING_SECONDS)
            rounds += 1
            if rounds % 10 == 0:
                await asyncio.to_thread(self.measure_db)
            now = time.monotonic()
            node = self.node
            # A corrupt cluster applies no expiry; asking every second would only grow the log.
            if node is not None and node.is_leader and not node.corrupt:
                expired = self.lessor.expired(now)
                if expired:
                    task = asyncio.create_task(self.propose(requests.LeaseExpire(tuple(expired))))
                    task.add_done_callback(_ignore_result)
            if node is not None and self._auto_compaction is not None:
                target = self._auto_compaction.observe(now, self.store.revision, node.is_leader)
                if target is not None:
                    asyncio.create_task(self._auto_compact(target)).add_done_callback(
                        _ignore_result
                    )
            self.watch_hub.tick(now)

    async def _auto_compact(self, revision: int) -> None:
        assert self._auto_compaction is not None
        log.info("auto-compaction at revision %d (%s)", revision, self._auto_compaction.keeps)
        try:
            result = await self.propose(pb.CompactionRequest(revision=revision))
        except EtcdError as err:
            result = err
        if isinstance(result, Exception):
            # Compacted further already (a client, an earlier leader) or no longer leading:
            # the next period tries again.
            log.info("auto-compaction at revision %d not done: %s", revision, result)

    # -- NodeHandle ------------------------------------------------------------------------

    def header(self) -> pb.ResponseHeader:
        node = self.node
        assert node is not None
        return pb.ResponseHeader(
            cluster_id=node.cluster_id, member_id=node.member_id, raft_term=node.core.term
        )

    def _check_space(self, request: Any) -> None:
        """etcd's quota: past --quota-backend-bytes, writes that add data are refused (and
        the NOSPACE alarm raised for the cluster); reads, deletes and compactions go on."""
        if not isinstance(request, GROWING_REQUESTS):
            return
        node = self.node
        assert node is not None
        if isinstance(request, pb.TxnRequest) and not _txn_puts(request):
            return
        if any(alarm == NOSPACE for _, alarm in node.alarms):
            raise NoSpaceError()
        if self.db_size + request.ByteSize() > self.cfg.quota_backend_bytes:
            task = asyncio.get_running_loop().create_task(
                node.set_alarm("activate", node.member_id, NOSPACE)
            )
            task.add_done_callback(_ignore_result)
            raise NoSpaceError()

    async def propose(self, request: Any) -> object:
        node = self.node
        assert node is not None
        self._check_space(request)
        request_id = node.waiters.new_request_id()
        data = requests.encode(request_id, request)
        try:
            return await node.propose(data, request_id)
        except EtcdError:
            raise
        except Exception as exc:
            raise _unavailable(exc) from exc

    async def read_barrier(self) -> None:
        node = self.node
        assert node is not None
        try:
            await node.read_barrier()
        except Exception as exc:
            raise _unavailable(exc) from exc

    async def lease_renew(self, lease_id: int) -> int:
        node = self.node
        assert node is not None
        if node.is_leader:
            return await self._renew_as_leader(lease_id)
        if not node.leader_id:
            raise NoLeaderError()
        try:
            ttl = int(await node.transport.lease_renew(node.leader_id, lease_id))
        except EtcdError:
            raise
        except Exception as exc:  # unreachable, timed out, no longer the leader
            raise _unavailable(exc) from exc
        if ttl == renewals.NOT_FOUND:  # the transport reports an unknown lease as this
            raise LeaseNotFoundError()
        return ttl

    async def renew_locally(self, lease_id: int) -> int:
        """A follower forwarded a keep-alive to us (the leader)."""
        return await self._renew_as_leader(lease_id)

    async def _renew_as_leader(self, lease_id: int) -> int:
        """Renew on this member, the leader, once it has confirmed that it still leads.

        A leader that stood still (paused, starved) or was cut off may not know yet that
        another was elected meanwhile, which restarted every lease's clock without this
        renewal. Answered from its own clock, the renewal could outlast the lease on the
        real leader, and a lock held under it be granted to someone else meanwhile. The
        confirmation is a read round (shared by every read and renewal of the turn), as
        etcd's leader confirms its leadership before it renews.
        """
        await self.read_barrier()
        return self.lessor.renew(lease_id, time.monotonic())

    async def lease_remaining(self, lease_id: int) -> int | None:
        node = self.node
        assert node is not None
        if node.is_leader:
            return self.remaining_locally(lease_id)
        if not node.leader_id:
            raise NoLeaderError()
        try:
            remaining: int | None = await node.transport.lease_remaining(node.leader_id, lease_id)
        except EtcdError:
            raise
        except Exception as exc:  # unreachable, timed out, no longer the leader
            raise _unavailable(exc) from exc
        return remaining

    def remaining_locally(self, lease_id: int) -> int:
        """A follower asks us (the leader) how long a lease has left; -1: no such lease."""
        if not self.lessor.primary:
            raise NotLeaderError()
        return int(self.lessor.time_to_live(lease_id, now=time.monotonic()).TTL)


GROWING_REQUESTS = (pb.PutRequest, pb.TxnRequest, pb.LeaseGrantRequest)


def _txn_puts(txn: pb.TxnRequest) -> bool:
    ops = list(txn.success) + list(txn.failure)
    return any(
        op.HasField("request_put") or (op.HasField("request_txn") and _txn_puts(op.request_txn))
        for op in ops
    )


def _unavailable(exc: BaseException) -> EtcdError:
    text = str(exc)
    if "timed out" in text:
        return RequestTimeoutError()
    return NoLeaderError()


def _ignore_result(task: asyncio.Task[object]) -> None:
    with contextlib.suppress(Exception, asyncio.CancelledError):
        task.result()
