"""The MVCC key-value store: etcd v3 KV semantics on LevelDB.

Every request that changes something gets one new main revision; each change inside it (one
per key put or deleted) gets a sub revision. Each key carries create_revision, mod_revision
and version; history is kept until compaction. Requests and responses are the generated etcd
protobuf messages, so the API layer only fills in cluster id, member id and raft term.

Writes never touch LevelDB directly: each applying method takes a plyvel write batch and puts
every change of the request into it, so the caller can add the Raft applied index to the same
batch and commit the entry atomically. Until that batch is written, the store serves the
records it added from an in-memory overlay, so reads right after an apply see its effects. Use
a fresh batch per commit (or call :meth:`MvccStore.batch_written` after writing one) so the
overlay is released. If a batch is discarded instead of written, the in-memory state no longer
matches the disk and the store must be reopened.

Requests are validated in full before any change is made, so an apply that raises an
:class:`~flotilla.node.kv.errors.EtcdError` leaves the store (and the batch) untouched, which
is what every member must do alike for a deterministic state machine.
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Generic, Protocol, TypeVar

from flotilla.node import failpoints
from flotilla.node.api.etcdpb.kv_pb2 import Event, KeyValue
from flotilla.node.api.etcdpb.rpc_pb2 import (
    CompactionRequest,
    CompactionResponse,
    Compare,
    DeleteRangeRequest,
    DeleteRangeResponse,
    HashKVResponse,
    PutRequest,
    PutResponse,
    RangeRequest,
    RangeResponse,
    RequestOp,
    ResponseOp,
    TxnRequest,
    TxnResponse,
)
from flotilla.node.kv import codec, snapshot
from flotilla.node.kv.errors import (
    CompactedError,
    CorruptDataError,
    FutureRevisionError,
    KeyNotFoundError,
    LeaseNotFoundError,
)
from flotilla.node.kv.keyindex import KeyIndex, TreeIndex, main_of, sub_of
from flotilla.node.kv.validate import (
    DEFAULT_MAX_TXN_OPS,
    check_delete,
    check_put,
    check_range,
    check_txn,
)

R = TypeVar("R")

_PUT = Event.PUT
_DELETE = Event.DELETE
_SORT_NONE = RangeRequest.NONE
_SORT_ASCEND = RangeRequest.ASCEND
_SORT_DESCEND = RangeRequest.DESCEND
_TARGET_KEY = RangeRequest.KEY

_SORT_KEYS: dict[int, Callable[[KeyValue], Any]] = {
    RangeRequest.KEY: lambda kv: kv.key,
    RangeRequest.VERSION: lambda kv: kv.version,
    RangeRequest.CREATE: lambda kv: kv.create_revision,
    RangeRequest.MOD: lambda kv: kv.mod_revision,
    RangeRequest.VALUE: lambda kv: kv.value,
}


class WriteBatch(Protocol):
    """The part of ``plyvel.WriteBatch`` the store uses."""

    def put(self, key: bytes, value: bytes) -> None: ...

    def delete(self, key: bytes) -> None: ...


@dataclass(slots=True)
class Applied(Generic[R]):
    """What applying one request produced.

    ``events`` are the watch events of the request in revision order (empty when nothing
    changed); ``revision`` is the store revision after the apply.
    """

    response: R
    events: list[Event] = field(default_factory=list)
    revision: int = 0


@dataclass(slots=True)
class _Write:
    """One request's write in progress: all its changes share ``main``."""

    batch: WriteBatch
    main: int
    sub: int = 0
    events: list[Event] = field(default_factory=list)


class MvccStore:
    """An etcd-compatible MVCC store over a LevelDB database (``plyvel.DB``).

    All records live under ``prefix``, which must not be shared with other data: restoring a
    snapshot replaces everything under it. ``lease_exists`` (optional) is asked whether a lease
    id is granted before a put attaches it, as etcd's lessor is; without it any id is accepted.
    ``events_prev_kv`` makes every returned event carry the previous key-value, which costs a
    read per change; the node can turn it off while no watcher asked for prev_kv.

    The methods are thread-safe: one lock serialises them, which is what the apply loop and
    concurrent readers need and costs little next to a LevelDB access.
    """

    def __init__(
        self,
        db: Any,
        *,
        prefix: bytes = b"kv/",
        max_txn_ops: int = DEFAULT_MAX_TXN_OPS,
        lease_exists: Callable[[int], bool] | None = None,
        events_prev_kv: bool = True,
    ) -> None:
        if not prefix:
            raise ValueError("the store needs a non-empty key prefix of its own")
        self._db = db
        self._prefix = prefix
        self.max_txn_ops = max_txn_ops
        self.lease_exists = lease_exists
        self.events_prev_kv = events_prev_kv
        self._lock = threading.RLock()
        self._index = TreeIndex()
        self._leases: dict[int, set[bytes]] = {}
        self._rev = 1
        self._compacted = 0
        self._overlay: dict[bytes, bytes] = {}
        self._overlay_batch: WriteBatch | None = None
        self._broken: BaseException | None = None
        self._load()

    # ------------------------------------------------------------------ state

    @property
    def revision(self) -> int:
        """The current (newest) main revision; 1 for an empty store, as in etcd.

        etcd's store starts at revision 1 without any record there, so the first change gets
        revision 2 and a read at revision 1 sees nothing; clients rely on those numbers.
        """
        return self._rev

    @property
    def compacted_revision(self) -> int:
        """The revision of the last compaction; reads below it fail. 0 if never compacted.

        A compaction needs a revision above the compacted one, so it is never at 0 and 0
        stays unambiguous; HashKV reports it as etcd's -1.
        """
        return self._compacted

    def batch_written(self) -> None:
        """Tell the store the last batch it wrote into is on disk, so its overlay can go."""
        with self._lock:
            self._overlay.clear()
            self._overlay_batch = None

    def keys_for_lease(self, lease_id: int) -> list[bytes]:
        """The live keys attached to ``lease_id``, in byte order."""
        with self._lock:
            return sorted(self._leases.get(lease_id, ()))

    def leases(self) -> list[int]:
        """Lease ids that have at least one live key attached."""
        with self._lock:
            return sorted(self._leases)

    # ------------------------------------------------------------------ loading

    def _load(self) -> None:
        plen = len(self._prefix)
        index = self._index
        stored = self._db.iterator(prefix=self._prefix + codec.REV_TAG)
        indexer = _Indexer(index, "record")
        indexer.add((full[plen:], value) for full, value in stored)
        last = indexer.last
        index.reorder()
        self._leases = _live_keys_by_lease(index)
        # The current revision is that of the newest record, except after a compaction that
        # dropped it (a deletion at the compaction revision); compaction records the revision.
        # An empty store is at revision 1, as etcd's is.
        self._rev = max(last, self._read_meta(codec.META_CURRENT), 1)
        self._compacted = self._read_meta(codec.META_COMPACTED)
        if self._compacted > self._rev:
            raise CorruptDataError(f"compacted revision {self._compacted} is beyond {self._rev}")

    def _read_meta(self, name: bytes) -> int:
        value = self._db.get(self._prefix + name)
        return 0 if value is None else codec.decode_meta(name, value)

    # ------------------------------------------------------------------ records

    def _raw(self, main: int, sub: int) -> tuple[bytes, bytes | None]:
        rk = codec.rev_key(main, sub)
        full = self._prefix + rk
        value = self._overlay.get(full)
        if value is None:
            value = self._db.get(full)
        return rk, value

    def _read_into(self, key: bytes, entry: int, out: KeyValue) -> None:
        """Parse the record of packed ``entry`` (a put of ``key``) into ``out``."""
        rk, value = self._raw(main_of(entry), sub_of(entry))
        codec.decode_kv_into(rk, value, out)
        if out.key != key:
            raise CorruptDataError(f"record {rk!r} belongs to another key")

    def _read(self, key: bytes, entry: int) -> KeyValue:
        kv = KeyValue()
        self._read_into(key, entry, kv)
        return kv

    def _write(self, w: _Write, rk: bytes, record: bytes) -> None:
        full = self._prefix + rk
        w.batch.put(full, record)
        self._overlay[full] = record

    # ------------------------------------------------------------------ write plumbing

    def _begin(self, batch: WriteBatch) -> _Write:
        if self._broken is not None:
            raise RuntimeError("the store failed during an apply and must be reopened") from (
                self._broken
            )
        if batch is not self._overlay_batch:
            self._overlay.clear()
            self._overlay_batch = batch
        return _Write(batch, self._rev + 1)

    def _end(self, w: _Write) -> int:
        if w.sub:
            # No metadata write: the newest record already says how far the store got.
            self._rev = w.main
        return self._rev

    def _rev_in(self, w: _Write | None) -> int:
        """The revision a read inside ``w`` observes: its own changes count once made."""
        if w is not None and w.sub:
            return w.main
        return self._rev

    def _put_key(
        self, w: _Write, key: bytes, value: bytes, lease: int, prev: KeyValue | None
    ) -> None:
        index = self._index
        ki = index.get(key)
        if ki is None:
            ki = index.get_or_create(key)
        main = w.main
        sub = w.sub
        ev = Event()
        kv = ev.kv
        kv.key = key
        kv.mod_revision = main
        kv.value = value
        if lease:
            kv.lease = lease
        if ki.live:
            create = ki.create
            version = ki.version + 1
            old_lease = ki.lease
        else:
            create = main
            version = 1
            old_lease = 0
        kv.create_revision = create
        kv.version = version
        rk = codec.rev_key(main, sub)
        self._write(w, rk, codec.encode_kv(rk, False, kv.SerializeToString()))
        ki.put(main, sub, create, version, lease)
        if old_lease != lease:
            if old_lease:
                self._detach(old_lease, key)
            if lease:
                self._leases.setdefault(lease, set()).add(key)
        if prev is not None:
            ev.prev_kv.CopyFrom(prev)
        w.events.append(ev)
        w.sub = sub + 1

    def _delete_key(self, w: _Write, key: bytes, ki: KeyIndex, prev: KeyValue | None) -> None:
        main = w.main
        sub = w.sub
        ev = Event(type=_DELETE)
        kv = ev.kv
        kv.key = key
        kv.mod_revision = main
        rk = codec.rev_key(main, sub)
        self._write(w, rk, codec.encode_kv(rk, True, kv.SerializeToString()))
        if ki.lease:
            self._detach(ki.lease, key)
        ki.tombstone(main, sub)
        if prev is not None:
            ev.prev_kv.CopyFrom(prev)
        w.events.append(ev)
        w.sub = sub + 1

    def _detach(self, lease: int, key: bytes) -> None:
        keys = self._leases.get(lease)
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._leases[lease]

    def _guard(self, fn: Callable[[], R]) -> R:
        """Run the mutating part of an apply; a failure there leaves memory and disk apart."""
        try:
            return fn()
        except BaseException as exc:
            self._broken = exc
            raise

    # ------------------------------------------------------------------ Range

    def range(self, req: RangeRequest) -> RangeResponse:
        """etcd's Range: read [key, range_end) at the current or an older revision."""
        check_range(req)
        resp = RangeResponse()
        with self._lock:
            self._range(req, resp, None)
        return resp

    def _range(self, req: RangeRequest, resp: RangeResponse, w: _Write | None) -> None:
        cur = self._rev_in(w)
        rev = req.revision
        if rev > cur:
            raise FutureRevisionError()
        if rev <= 0:
            rev = cur
        if rev < self._compacted:
            raise CompactedError()
        resp.header.revision = cur
        at_head = rev == cur

        key = req.key
        range_end = req.range_end
        if not range_end:
            # Single key: the hot path.
            ki = self._index.get(key)
            entry = None
            if ki is not None:
                if at_head:
                    revs = ki.revs
                    if revs and not revs[-1] & 1:
                        entry = revs[-1]
                else:
                    entry = ki.entry_at(rev)
            if entry is None:
                return
            resp.count = 1
            if req.count_only:
                return
            kv = resp.kvs.add()
            self._read_into(key, entry, kv)
            if not self._passes_filters(req, kv):
                del resp.kvs[:]
                return
            if req.keys_only:
                kv.ClearField("value")
            return

        sort_order = req.sort_order
        filtered = bool(
            req.min_mod_revision
            or req.max_mod_revision
            or req.min_create_revision
            or req.max_create_revision
        )
        limit = req.limit
        fetch = 0 if (sort_order != _SORT_NONE or filtered or limit <= 0) else limit + 1

        found = self._index.visible(key, range_end, None if at_head else rev)
        total = len(found)
        resp.count = total
        if fetch and total > fetch:
            del found[fetch:]
        if req.count_only or not found:
            return

        sort_target = req.sort_target
        if sort_target != _TARGET_KEY and sort_order == _SORT_NONE:
            sort_order = _SORT_ASCEND
        elif sort_target == _TARGET_KEY and sort_order == _SORT_ASCEND:
            sort_order = _SORT_NONE

        if sort_order == _SORT_NONE and not filtered:
            if limit > 0 and len(found) > limit:
                del found[limit:]
                resp.more = True
            kvs = resp.kvs
            for k, entry in found:
                self._read_into(k, entry, kvs.add())
        else:
            read = [self._read(k, entry) for k, entry in found]
            if filtered:
                read = [kv for kv in read if self._passes_filters(req, kv)]
            if sort_order != _SORT_NONE:
                read.sort(key=_SORT_KEYS[sort_target], reverse=sort_order == _SORT_DESCEND)
            if limit > 0 and len(read) > limit:
                del read[limit:]
                resp.more = True
            resp.kvs.extend(read)
        if req.keys_only:
            for kv in resp.kvs:
                kv.ClearField("value")

    @staticmethod
    def _passes_filters(req: RangeRequest, kv: KeyValue) -> bool:
        if req.max_mod_revision and kv.mod_revision > req.max_mod_revision:
            return False
        if req.min_mod_revision and kv.mod_revision < req.min_mod_revision:
            return False
        if req.max_create_revision and kv.create_revision > req.max_create_revision:
            return False
        return not (req.min_create_revision and kv.create_revision < req.min_create_revision)

    # ------------------------------------------------------------------ Put

    def put(self, req: PutRequest, batch: WriteBatch) -> Applied[PutResponse]:
        """etcd's Put, including prev_kv, ignore_value and ignore_lease."""
        check_put(req)
        with self._lock:
            self._check_put_state(req)
            w = self._begin(batch)
            resp = PutResponse()
            self._guard(lambda: self._put(w, req, resp))
            rev = self._end(w)
            return Applied(resp, w.events, rev)

    def _check_put_state(self, req: PutRequest) -> None:
        if req.ignore_value or req.ignore_lease:
            ki = self._index.get(req.key)
            if ki is None or not ki.live:
                raise KeyNotFoundError()
        if req.lease and self.lease_exists is not None and not self.lease_exists(req.lease):
            raise LeaseNotFoundError()

    def _put(self, w: _Write, req: PutRequest, resp: PutResponse) -> None:
        key = req.key
        value = req.value
        lease = req.lease
        prev = None
        if req.prev_kv or req.ignore_value or req.ignore_lease or self.events_prev_kv:
            ki = self._index.get(key)
            if ki is not None and ki.live:
                prev = self._read(key, ki.revs[-1])
                if req.ignore_value:
                    value = prev.value
                if req.ignore_lease:
                    lease = prev.lease
                if req.prev_kv:
                    resp.prev_kv.CopyFrom(prev)
        self._put_key(w, key, value, lease, prev if self.events_prev_kv else None)
        resp.header.revision = w.main

    # ------------------------------------------------------------------ DeleteRange

    def delete_range(
        self, req: DeleteRangeRequest, batch: WriteBatch
    ) -> Applied[DeleteRangeResponse]:
        """etcd's DeleteRange: delete every live key in [key, range_end)."""
        check_delete(req)
        with self._lock:
            w = self._begin(batch)
            resp = DeleteRangeResponse()
            self._guard(lambda: self._delete(w, req, resp))
            rev = self._end(w)
            return Applied(resp, w.events, rev)

    def _delete(self, w: _Write, req: DeleteRangeRequest, resp: DeleteRangeResponse) -> None:
        targets = [(k, ki) for k, ki in self._index.items(req.key, req.range_end) if ki.live]
        want_prev = req.prev_kv or self.events_prev_kv
        for k, ki in targets:
            prev = self._read(k, ki.revs[-1]) if want_prev else None
            if req.prev_kv:
                assert prev is not None
                resp.prev_kvs.append(prev)
            self._delete_key(w, k, ki, prev if self.events_prev_kv else None)
        resp.deleted = len(targets)
        resp.header.revision = self._rev_in(w)

    # ------------------------------------------------------------------ Txn

    def txn(self, req: TxnRequest, batch: WriteBatch) -> Applied[TxnResponse]:
        """etcd's Txn: compares, then the success or failure ops, as one revision.

        As in etcd, every compare (nested ones too) is evaluated against the state before the
        txn, every executed op is checked before anything changes, and reads inside the txn
        see the txn's own earlier writes.
        """
        check_txn(req, self.max_txn_ops)
        with self._lock:
            path: list[bool] = []
            self._compare_path(req, path)
            self._check_txn_state(req, iter(path), puts=True)
            self._check_txn_state(req, iter(path), puts=False)
            w = self._begin(batch)
            resp = TxnResponse()
            self._guard(lambda: self._txn(w, req, iter(path), resp))
            rev = self._end(w)
            resp.header.revision = rev
            return Applied(resp, w.events, rev)

    def read_txn(self, req: TxnRequest) -> TxnResponse:
        """A txn whose every op (both branches, nested too) is a Range, run with no batch.

        etcd serves such a txn without a Raft proposal, like a Range. It changes nothing, so
        it must not touch the write overlay of a batch that may still be unwritten.
        """
        check_txn(req, self.max_txn_ops)
        if not is_read_only(req):
            raise ValueError("read_txn needs a txn without puts or deletes")
        with self._lock:
            path: list[bool] = []
            self._compare_path(req, path)
            self._check_txn_state(req, iter(path), puts=False)
            w = _Write(_NO_BATCH, self._rev + 1)
            resp = TxnResponse()
            self._txn(w, req, iter(path), resp)
            resp.header.revision = self._rev
            return resp

    def _compare_path(self, req: TxnRequest, path: list[bool]) -> None:
        ok = all(self._compare(c) for c in req.compare)
        path.append(ok)
        for op in req.success if ok else req.failure:
            if op.WhichOneof("request") == "request_txn":
                self._compare_path(op.request_txn, path)

    def _check_txn_state(self, req: TxnRequest, path: Iterator[bool], *, puts: bool) -> None:
        ops = req.success if next(path) else req.failure
        for op in ops:
            which = op.WhichOneof("request")
            if which == "request_txn":
                self._check_txn_state(op.request_txn, path, puts=puts)
            elif puts and which == "request_put":
                self._check_put_state(op.request_put)
            elif not puts and which == "request_range":
                rev = op.request_range.revision
                if rev > 0:
                    if rev > self._rev:
                        raise FutureRevisionError()
                    if rev < self._compacted:
                        raise CompactedError()

    def _txn(self, w: _Write, req: TxnRequest, path: Iterator[bool], resp: TxnResponse) -> None:
        ok = next(path)
        resp.succeeded = ok
        responses = resp.responses
        for op in req.success if ok else req.failure:
            self._op(w, op, path, responses.add())

    def _op(self, w: _Write, op: RequestOp, path: Iterator[bool], out: ResponseOp) -> None:
        which = op.WhichOneof("request")
        if which == "request_put":
            self._put(w, op.request_put, out.response_put)
        elif which == "request_range":
            self._range(op.request_range, out.response_range, w)
        elif which == "request_delete_range":
            self._delete(w, op.request_delete_range, out.response_delete_range)
        elif which == "request_txn":
            sub = out.response_txn
            # etcd leaves the revision of a nested txn's header unset.
            sub.header.SetInParent()
            self._txn(w, op.request_txn, path, sub)

    def _compare(self, c: Compare) -> bool:
        target = c.target
        if c.range_end:
            kis = [(k, ki) for k, ki in self._index.items(c.key, c.range_end) if ki.live]
        else:
            ki = self._index.get(c.key)
            kis = [(c.key, ki)] if ki is not None and ki.live else []
        union = c.WhichOneof("target_union")
        if target == Compare.VALUE:
            if not kis:
                # A missing key has no value to compare: etcd always fails this.
                return False
            want_b = c.value if union == "value" else b""
            return all(
                _cmp_result(c.result, _cmp(self._read(k, ki.revs[-1]).value, want_b))
                for k, ki in kis
            )
        if target == Compare.VERSION:
            want = c.version if union == "version" else 0
            have = [ki.version for _, ki in kis]
        elif target == Compare.CREATE:
            want = c.create_revision if union == "create_revision" else 0
            have = [ki.create for _, ki in kis]
        elif target == Compare.MOD:
            want = c.mod_revision if union == "mod_revision" else 0
            have = [main_of(ki.revs[-1]) for _, ki in kis]
        elif target == Compare.LEASE:
            want = c.lease if union == "lease" else 0
            have = [ki.lease for _, ki in kis]
        else:
            return True
        if not have:
            have = [0]
        return all(_cmp_result(c.result, _cmp(h, want)) for h in have)

    # ------------------------------------------------------------------ leases

    def revoke_lease(self, lease_id: int, batch: WriteBatch) -> Applied[list[bytes]]:
        """Delete every key attached to ``lease_id`` in one revision (LeaseRevoke, expiry).

        Keys are deleted in byte order, as etcd's lessor does. The response is the list of
        deleted keys; nothing changes (and no revision is used) if the lease has no keys.
        """
        with self._lock:
            keys = sorted(self._leases.get(lease_id, ()))
            w = self._begin(batch)

            def apply() -> None:
                for k in keys:
                    ki = self._index.get(k)
                    assert ki is not None and ki.live
                    prev = self._read(k, ki.revs[-1]) if self.events_prev_kv else None
                    self._delete_key(w, k, ki, prev)

            self._guard(apply)
            rev = self._end(w)
            return Applied(keys, w.events, rev)

    # ------------------------------------------------------------------ compaction

    def compact(self, req: CompactionRequest, batch: WriteBatch) -> Applied[CompactionResponse]:
        """etcd's Compact: discard history a read at ``req.revision`` or later cannot see.

        Compaction is applied in full in the batch (``physical`` is always honoured), so every
        member holds the same records afterwards and HashKV stays comparable.
        """
        with self._lock:
            rev = req.revision
            if rev <= self._compacted:
                raise CompactedError()
            if rev > self._rev:
                raise FutureRevisionError()
            self._begin(batch)

            def apply() -> None:
                failpoints.hit("mvcc.compact")
                index = self._index
                prefix = self._prefix
                overlay = self._overlay
                emptied = []
                for k, ki in index.all_items():
                    for entry in ki.compact(rev):
                        full = prefix + codec.rev_key(main_of(entry), sub_of(entry))
                        batch.delete(full)
                        overlay.pop(full, None)
                    if not ki.revs:
                        emptied.append(k)
                for k in emptied:
                    index.remove(k)
                batch.put(
                    prefix + codec.META_COMPACTED, codec.encode_meta(codec.META_COMPACTED, rev)
                )
                batch.put(
                    prefix + codec.META_CURRENT, codec.encode_meta(codec.META_CURRENT, self._rev)
                )
                self._compacted = rev

            self._guard(apply)
            resp = CompactionResponse()
            resp.header.revision = self._rev
            return Applied(resp, [], self._rev)

    # ------------------------------------------------------------------ watch replay

    def events_since(
        self,
        key: bytes,
        range_end: bytes,
        start_revision: int,
        *,
        prev_kv: bool = False,
        max_events: int = 0,
    ) -> list[Event]:
        """The history of [key, range_end) from ``start_revision`` on, in revision order.

        This is what a watch created with a past start revision replays before it follows
        live events. ``max_events`` (0 = no limit) bounds the answer but never splits one
        revision's events, so the caller can continue from the next revision. Raises
        :class:`CompactedError` if ``start_revision`` is below the compacted revision, where
        etcd cancels the watch with its compact_revision.
        """
        with self._lock:
            if start_revision < self._compacted:
                raise CompactedError()
            start = max(start_revision, 1) << 33
            found: list[tuple[int, bytes, KeyIndex]] = []
            for k, ki in self._index.items(key, range_end):
                revs = ki.revs
                if revs and revs[-1] >= start:
                    found.extend((e, k, ki) for e in revs[bisect_left(revs, start) :])
            found.sort(key=lambda t: t[0])
            if max_events and len(found) > max_events:
                last_main = main_of(found[max_events - 1][0])
                cut = max_events
                while cut < len(found) and main_of(found[cut][0]) == last_main:
                    cut += 1
                del found[cut:]
            events = []
            for entry, k, ki in found:
                ev = Event()
                rk, value = self._raw(main_of(entry), sub_of(entry))
                if codec.decode_kv_into(rk, value, ev.kv):
                    ev.type = _DELETE
                if ev.kv.key != k:
                    raise CorruptDataError(f"record {rk!r} belongs to another key")
                if prev_kv:
                    before = ki.previous(entry)
                    if before is not None:
                        self._read_into(k, before, ev.prev_kv)
                events.append(ev)
            return events

    # ------------------------------------------------------------------ hash and snapshot

    def _entries_upto(self, rev: int) -> list[int]:
        entries = []
        bound = (rev + 1) << 33
        for _, ki in self._index.all_items():
            revs = ki.revs
            if revs and revs[-1] < bound:
                entries.extend(revs)
            else:
                entries.extend(revs[: bisect_left(revs, bound)])
        entries.sort()
        return entries

    def hash_kv(self, revision: int = 0) -> HashKVResponse:
        """HashKV: a CRC-32 over every stored record up to ``revision`` (0 = current).

        Members that applied the same entries (including the same compactions) hold the same
        records and so report the same hash; every record's checksum is verified on the way.
        """
        return self.hash_view(revision)()

    def hash_view(self, revision: int = 0) -> Callable[[], HashKVResponse]:
        """:meth:`hash_kv` in two steps: what the hash covers is fixed now (under the lock,
        quickly, as :meth:`freeze` fixes a snapshot), and the returned function reads and
        hashes it, in any thread, while applies go on."""
        with self._lock:
            rev = revision if revision > 0 else self._rev
            if rev > self._rev:
                raise FutureRevisionError()
            if rev < self._compacted:
                raise CompactedError()
            entries = self._entries_upto(rev) if self._overlay else None
            overlay = dict(self._overlay)
            dbsnap = self._db.snapshot()
            # etcd answers -1 for a store that was never compacted.
            compacted = self._compacted if self._compacted > 0 else -1
            current = self._rev
        prefix = self._prefix

        def compute() -> HashKVResponse:
            records: Iterable[tuple[bytes, bytes]]
            if entries is None:
                # The records up to ``rev``, in revision order, straight from the snapshot.
                plen = len(prefix)
                upto = dbsnap.iterator(
                    start=prefix + codec.REV_TAG, stop=prefix + codec.rev_key(rev + 1, 0)
                )
                records = ((k[plen:], v) for k, v in upto)
            else:
                records = _records(entries, overlay, dbsnap, prefix)
            h = 0
            try:
                for rk, value in records:
                    codec.decode_kv_into(rk, value, KeyValue())
                    h = codec.crc32(value, codec.crc32(rk, h))
            finally:
                _close(dbsnap)
            resp = HashKVResponse(hash=h, compact_revision=compacted, hash_revision=rev)
            resp.header.revision = current
            return resp

        return compute

    def freeze(self) -> StoreView:
        """Fix the store's contents as they are now, to be streamed later, in any thread and
        any number of times, while applies go on.

        Quick and the same cost at any size: a LevelDB snapshot, whose records under the
        revision tag are exactly the store's (compaction deletes in the same batch), in
        revision order. Only records still in the overlay (a batch not yet written: never
        between the driver's turns) need the index walked for the list of revisions.
        """
        with self._lock:
            entries = self._entries_upto(self._rev) if self._overlay else None
            return StoreView(
                self._rev,
                self._compacted,
                entries,
                dict(self._overlay),
                self._db.snapshot(),
                self._prefix,
            )

    def snapshot_chunks(self, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        """The store's full contents as a checksummed byte stream, in chunks.

        The contents are fixed when iteration starts (a LevelDB snapshot plus the records
        still only in the overlay), so applies may continue while the stream is consumed.
        """
        view = self.freeze()
        try:
            yield from view.chunks(chunk_size)
        finally:
            _close(view.dbsnap)

    def snapshot(self, out: BinaryIO) -> int:
        """Write :meth:`snapshot_chunks` to ``out``; return the number of bytes written."""
        n = 0
        for chunk in self.snapshot_chunks():
            out.write(chunk)
            n += len(chunk)
        return n

    def restore(self, stream: BinaryIO, batch: WriteBatch) -> None:
        """Replace the store's contents with a snapshot read from ``stream``.

        The whole stream is read and verified (framing, overall checksum and every record's
        own checksum) before anything changes; a damaged snapshot raises CorruptDataError and
        leaves the store as it was. The replacement is written into ``batch``.
        """
        loader = SnapshotLoader()
        loader.feed(stream.read())
        loader.finish()
        self.install(loader, batch)

    def install(self, loaded: SnapshotLoader, batch: WriteBatch) -> None:
        """Replace the store's contents with a snapshot ``loaded`` whole (its ``finish``
        returned), writing the replacement into ``batch``."""
        assert loaded.header is not None, "a snapshot is installed once it is whole"
        header, records, index, leases = loaded.header, loaded.records, loaded.index, loaded.leases
        with self._lock:
            if self._broken is not None:
                raise RuntimeError("the store failed during an apply and must be reopened")
            prefix = self._prefix
            # Records only in the overlay may have been put into this very batch.
            for full in self._overlay:
                batch.delete(full)
            self._overlay.clear()
            self._overlay_batch = batch
            for full in self._db.iterator(prefix=prefix, include_value=False):
                batch.delete(full)
            for rk, value in records:
                full = prefix + rk
                batch.put(full, value)
                self._overlay[full] = value
            batch.put(
                prefix + codec.META_CURRENT, codec.encode_meta(codec.META_CURRENT, header.revision)
            )
            batch.put(
                prefix + codec.META_COMPACTED,
                codec.encode_meta(codec.META_COMPACTED, header.compacted),
            )
            self._index = index
            self._leases = leases
            # A snapshot of an empty store may say revision 0 (older members wrote that).
            self._rev = max(header.revision, 1)
            self._compacted = header.compacted


class _NoBatch:
    """The batch of a read-only txn: any write through it is a bug."""

    def put(self, key: bytes, value: bytes) -> None:
        raise RuntimeError("a read-only txn tried to write")

    def delete(self, key: bytes) -> None:
        raise RuntimeError("a read-only txn tried to write")


_NO_BATCH = _NoBatch()


def is_read_only(req: TxnRequest) -> bool:
    """Whether every op of ``req``, in both branches and nested txns, is a Range."""
    for op in (*req.success, *req.failure):
        which = op.WhichOneof("request")
        if which == "request_txn":
            if not is_read_only(op.request_txn):
                return False
        elif which != "request_range":
            return False
    return True


def _cmp(a: Any, b: Any) -> int:
    return int(a > b) - int(a < b)


def _cmp_result(result: int, c: int) -> bool:
    if result == Compare.EQUAL:
        return c == 0
    if result == Compare.NOT_EQUAL:
        return c != 0
    if result == Compare.GREATER:
        return c > 0
    if result == Compare.LESS:
        return c < 0
    return True


@dataclass(frozen=True)
class StoreView:
    """The store's contents at revision ``rev``, in a LevelDB snapshot (released when the
    view is dropped) plus the records not yet written (``overlay``); ``entries``, if given,
    lists the revisions to read, else every record in the snapshot is one."""

    rev: int
    compacted: int
    entries: list[int] | None
    overlay: dict[bytes, bytes]
    dbsnap: Any
    prefix: bytes

    def chunks(self, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        return self.stream(chunk_size)[1]

    def stream(self, chunk_size: int = 1 << 20) -> tuple[int, Iterator[bytes]]:
        """The snapshot's length in bytes, and its bytes in chunks, made as they are taken.

        The length comes first, from one pass over the records' keys and values (a fraction
        of the time serializing takes), so the snapshot can be sent while it is being made.
        """
        records: Iterable[tuple[bytes, bytes]]
        if self.entries is not None:
            records = list(_records(self.entries, self.overlay, self.dbsnap, self.prefix))
            count = len(records)
            value_bytes = sum(len(v) for _, v in records)
        else:
            tag = self.prefix + codec.REV_TAG
            count = value_bytes = 0
            for _, v in self.dbsnap.iterator(prefix=tag):
                count += 1
                value_bytes += len(v)
            plen = len(self.prefix)
            records = ((k[plen:], v) for k, v in self.dbsnap.iterator(prefix=tag))
        header = snapshot.Header(self.rev, self.compacted, count)
        size = snapshot.encoded_size(count, value_bytes)
        return size, snapshot.write_chunks(header, records, chunk_size)


class _Indexer:
    """Adds revision records, in revision order, to ``index`` (unordered: the caller calls
    ``reorder``), verifying each on the way; ``last`` is the last main revision added.

    Start-up and a snapshot's install go through every record of the store here, the
    install a piece at a time as the snapshot arrives: each record's body is parsed into
    one reused message.
    """

    def __init__(self, index: TreeIndex, what: str) -> None:
        self._get_or_create = index.get_or_create_unordered
        self._what = what
        self._kv = KeyValue()
        self._prev = b""
        self.last = 0

    def add(self, records: Iterable[tuple[bytes, bytes]]) -> None:
        kv = self._kv
        what = self._what
        parse_rev_key = codec.parse_rev_key
        decode_kv_into = codec.decode_kv_into
        get_or_create = self._get_or_create
        prev = self._prev
        main = self.last
        try:
            for rk, value in records:
                if rk <= prev:
                    raise CorruptDataError(f"{what} {rk!r} is out of order")
                prev = rk
                main, sub = parse_rev_key(rk)
                tombstone = decode_kv_into(rk, value, kv)
                if kv.mod_revision != main:
                    raise CorruptDataError(f"{what} {rk!r} holds revision {kv.mod_revision}")
                ki = get_or_create(kv.key)
                if tombstone:
                    ki.tombstone(main, sub)
                else:
                    ki.put(main, sub, kv.create_revision, kv.version, kv.lease)
        finally:
            self._prev = prev
            self.last = main


class SnapshotLoader:
    """A store snapshot read, verified and indexed as its bytes arrive (``feed``), checked
    whole (``finish``), then installed by :meth:`MvccStore.install`.

    A learner feeds it each piece as the leader sends it, so the index is built while the
    leader is still reading its store and the network is still carrying it, rather than all
    after the last byte. Any damage raises CorruptDataError, at the latest from ``finish``.
    """

    def __init__(self) -> None:
        self._reader = snapshot.Reader()
        self.index = TreeIndex()
        self._indexer = _Indexer(self.index, "snapshot record")
        self.records: list[tuple[bytes, bytes]] = []
        self.header: snapshot.Header | None = None
        self.leases: dict[int, set[bytes]] = {}  # lease -> its live keys

    def feed(self, data: bytes) -> None:
        records = self._reader.feed(data)
        self._indexer.add(records)
        self.records += records

    def finish(self) -> None:
        header = self._reader.finish()
        if self._indexer.last > header.revision or header.compacted > header.revision:
            raise CorruptDataError("snapshot header does not match its records")
        self.index.reorder()
        self.leases = _live_keys_by_lease(self.index)
        self.header = header


def _live_keys_by_lease(index: TreeIndex) -> dict[int, set[bytes]]:
    """Each lease with a live key attached, and those keys."""
    leases: dict[int, set[bytes]] = {}
    for key, ki in index.all_items():
        if ki.live and ki.lease:
            leases.setdefault(ki.lease, set()).add(key)
    return leases


def _records(
    entries: list[int], overlay: dict[bytes, bytes], dbsnap: Any, prefix: bytes
) -> Iterator[tuple[bytes, bytes]]:
    """The records of packed ``entries`` as of a view: the overlay's, else the snapshot's."""
    for entry in entries:
        rk = codec.rev_key(main_of(entry), sub_of(entry))
        full = prefix + rk
        value = overlay.get(full)
        if value is None:
            value = dbsnap.get(full)
        if value is None:
            raise CorruptDataError(f"record {rk!r} is missing")
        yield rk, value


def _close(dbsnap: Any) -> None:
    close = getattr(dbsnap, "close", None)
    if close is not None:
        close()
