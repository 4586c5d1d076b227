"""The watch hub: fans the events of each apply out to thousands of watchers in one pass.

Shape (after etcd's watchableStore, with the same guarantees):

* A :class:`WatchStream` is one client Watch stream. It owns its watchers and exactly one
  bounded output queue; the gRPC layer drains it with :meth:`WatchStream.take`. There are no
  per-watcher tasks or queues: the apply path appends ``(watcher, events)`` pairs, and the
  stream's single sender turns them into responses.
* *Synced* watchers have received every event up to the hub's revision. They are indexed for
  :meth:`WatchHub.notify`: single-key watchers by exact key (a dict lookup per event), range
  and prefix watchers by their interval, so 5,000 watchers on one prefix are one interval
  test per event plus one append each.
* A stream whose queue is full never blocks the apply path: its watchers that should receive
  events become *unsynced* (etcd's victims) and are later caught up from the store's history
  (``MvccStore.events_since``), in bounded chunks, whenever the stream's queue has room. If
  the history they need was compacted meanwhile, they are canceled with the compact revision,
  as etcd does. Watchers created with a past start revision start unsynced and replay the same
  way.

Each watcher keeps ``next_rev``, the first revision it has not received; every delivery
(live or replayed) moves it past the revisions covered, and events below it are never sent
again, so the revisions a watcher sees strictly increase with no gaps or duplicates.

The hub is not thread-safe: the driver calls :meth:`WatchHub.notify` and :meth:`WatchHub.tick`
from the event loop that also runs the Watch streams (``call_soon_threadsafe`` if it applies
in another thread). The store must already hold every revision passed to ``notify``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Final, TypeAlias

from flotilla.node.api.etcdpb.kv_pb2 import Event
from flotilla.node.api.etcdpb.rpc_pb2 import ResponseHeader, WatchCreateRequest, WatchResponse
from flotilla.node.kv.errors import CompactedError
from flotilla.node.kv.store import MvccStore

PROGRESS_ALL_ID: Final = -1
"""The watch id of a response to a WatchProgressRequest (clientv3's InvalidWatchID)."""

DEFAULT_MAX_PENDING: Final = 16384
"""Deliveries (one watcher's events of one apply) a stream may hold before watchers lag."""

DEFAULT_CATCH_UP_EVENTS: Final = 1000
"""Events read from history per unsynced watcher and step, so a catch-up stays short."""

DEFAULT_PROGRESS_INTERVAL: Final = 600.0
"""Seconds between progress notifications (etcd's default is ten minutes)."""

MAX_RESPONSE_BYTES: Final = 3 * 512 * 1024
"""Above this size a response to a ``fragment`` watcher is split (etcd: max request bytes)."""

ERR_DUPLICATE_ID: Final = "mvcc: duplicate watch ID provided on the WatchStream"
ERR_EMPTY_RANGE: Final = "mvcc: watcher range is empty"

_PUT = Event.PUT
_DELETE = Event.DELETE


class Watcher:
    """One watch: its interval, options, and how far it has been delivered."""

    __slots__ = (
        "canceled",
        "end",
        "fragment",
        "id",
        "key",
        "next_rev",
        "no_delete",
        "no_put",
        "prev_kv",
        "progress_notify",
        "range_end",
        "sent",
        "stream",
        "synced",
    )

    def __init__(self, stream: WatchStream, watch_id: int, req: WatchCreateRequest) -> None:
        self.stream = stream
        self.id = watch_id
        self.key = req.key or b"\x00"
        # etcd's conventions, kept for the store: b"" one key, b"\0" every key >= key.
        self.range_end = req.range_end
        # For matching: None one key, b"" unbounded, else the exclusive end.
        self.end: bytes | None = (
            None if not req.range_end else b"" if req.range_end == b"\x00" else req.range_end
        )
        filters = set(req.filters)
        self.no_put = WatchCreateRequest.NOPUT in filters
        self.no_delete = WatchCreateRequest.NODELETE in filters
        self.prev_kv = req.prev_kv
        self.fragment = req.fragment
        self.progress_notify = req.progress_notify
        self.next_rev = 0
        self.synced = False
        self.canceled = False
        self.sent = False

    def filter(self, events: Sequence[Event]) -> Sequence[Event]:
        """``events`` without those this watcher's filters drop (the same list if none)."""
        if self.no_put:
            events = [e for e in events if e.type != _PUT]
        if self.no_delete:
            events = [e for e in events if e.type != _DELETE]
        return events


# A queued item: a delivery (watcher, events, header revision) or a ready control response.
_Item: TypeAlias = "tuple[Watcher, EventBatch, int] | WatchResponse"


class WatchStream:
    """One client Watch stream: its watchers and its single bounded output queue."""

    def __init__(self, hub: WatchHub, wake: Callable[[], None] | None, max_pending: int) -> None:
        self._hub = hub
        self.wake = wake or _nothing
        self.max_pending = max_pending
        self.pending = 0
        self.queue: deque[_Item] = deque()
        self.watchers: dict[int, Watcher] = {}
        self.unsynced: dict[Watcher, None] = {}
        self.progress_all_pending = False
        self.closed = False
        self._next_id = 0

    # ------------------------------------------------------------------ requests

    def create(self, req: WatchCreateRequest) -> int:
        """Handle a WatchCreateRequest; queue the ``created`` response (and any replay).

        Returns the watch id, or -1 if the request was refused (the response then says
        ``canceled`` with etcd's reason).
        """
        hub = self._hub
        rev = hub.store.revision
        watch_id = req.watch_id
        reason = ""
        if req.range_end and req.range_end != b"\x00" and (req.key or b"\x00") >= req.range_end:
            reason = ERR_EMPTY_RANGE
        elif watch_id != 0 and watch_id in self.watchers:
            reason = ERR_DUPLICATE_ID
        if reason:
            self.push(_control(-1, rev, created=True, canceled=True, cancel_reason=reason))
            return -1
        if watch_id == 0:
            while self._next_id in self.watchers:
                self._next_id += 1
            watch_id = self._next_id
            self._next_id += 1
        w = Watcher(self, watch_id, req)
        self.watchers[watch_id] = w
        self.push(_control(watch_id, rev, created=True))
        start = req.start_revision
        hub._added(w)
        if 0 < start <= rev:
            w.next_rev = start
            self.unsynced[w] = None
            hub.catch_up(self)
        else:
            w.next_rev = start if start > 0 else rev + 1
            hub._sync(w)
        return int(watch_id)

    def cancel(self, watch_id: int) -> bool:
        """Handle a WatchCancelRequest; unknown ids are ignored, as etcd does."""
        w = self.watchers.get(watch_id)
        if w is None:
            return False
        self._drop(w)
        self.push(_control(watch_id, self._hub.store.revision, canceled=True))
        return True

    def request_progress(self) -> None:
        """Handle a WatchProgressRequest: a progress response once every watcher is synced."""
        if self.unsynced:
            self.progress_all_pending = True
        else:
            self.push(_control(PROGRESS_ALL_ID, self._hub.revision))

    def close(self) -> None:
        """The client stream ended: forget every watcher."""
        for w in list(self.watchers.values()):
            self._drop(w)
        self.queue.clear()
        self.pending = 0
        self.closed = True
        self._hub._streams.pop(self, None)

    def _drop(self, w: Watcher) -> None:
        w.canceled = True
        del self.watchers[w.id]
        self.unsynced.pop(w, None)
        self._hub._removed(w)

    # ------------------------------------------------------------------ output

    @property
    def has_room(self) -> bool:
        return self.pending < self.max_pending

    def push(self, resp: WatchResponse) -> None:
        """Queue a control response (created, canceled, progress); it is never refused."""
        self.queue.append(resp)
        self.wake()

    def take(self, max_items: int = 256) -> list[WatchResponse]:
        """Like :meth:`take_encoded`, as messages (for tests and tools)."""
        return [WatchResponse.FromString(b) for b in self.take_encoded(max_items)]

    def take_encoded(
        self, max_items: int = 256, header: ResponseHeader | None = None
    ) -> list[bytes]:
        """Pop up to ``max_items`` queued items as serialized responses, oldest first.

        ``header`` supplies cluster_id, member_id and raft_term. Responses are assembled from
        bytes: the events of one apply are serialized once per prev_kv choice and shared by
        every watcher (of every stream) that receives them, so a fan-out to thousands of
        watchers costs a bytes concatenation each instead of a message copy each.

        Draining makes room, so lagging watchers of this stream are caught up right here.
        """
        out: list[bytes | _Merged] = []
        # A watcher's response still open for the events of later applies in this take: a
        # lagging stream sends one response per watcher rather than one per apply. Never
        # past a control response, so events and control responses keep their order.
        open_: dict[Watcher, _Merged] = {}
        queue = self.queue
        limit = self._hub.max_response_bytes
        base = header if header is not None else ResponseHeader()
        heads: dict[int, bytes] = {}
        taken = 0
        while queue and taken < max_items:
            taken += 1
            item = queue.popleft()
            if isinstance(item, WatchResponse):
                rev = item.header.revision
                item.header.CopyFrom(base)
                item.header.revision = rev
                out.append(item.SerializeToString())
                open_.clear()
                continue
            self.pending -= 1
            w, batch, revision = item
            if w.canceled:
                continue
            blob = batch.blob(w.prev_kv)
            if w.fragment and len(batch.events) > 1 and len(blob) >= limit:
                resp = WatchResponse.FromString(_head(heads, base, revision) + blob)
                resp.watch_id = w.id
                out.extend(part.SerializeToString() for part in _fragments(resp, limit))
                open_.pop(w, None)
                continue
            merged = open_.get(w)
            if merged is not None and merged.size + len(blob) <= limit:
                merged.blobs.append(blob)
                merged.size += len(blob)
                merged.revision = revision
                continue
            open_[w] = merged = _Merged(w.id, revision, blob)
            out.append(merged)
        # Catch up in large steps (below half full), not one watcher per freed slot.
        if self.unsynced and self.pending <= self.max_pending // 2:
            self._hub.catch_up(self)
        return [r if isinstance(r, bytes) else r.encode(heads, base) for r in out]


class _Merged:
    """One watcher's events from one or more applies, as one response."""

    __slots__ = ("blobs", "revision", "size", "watch_id")

    def __init__(self, watch_id: int, revision: int, blob: bytes) -> None:
        self.watch_id = watch_id
        self.revision = revision
        self.blobs = [blob]
        self.size = len(blob)

    def encode(self, heads: dict[int, bytes], base: ResponseHeader) -> bytes:
        wid = _WATCH_ID_TAG + _varint(self.watch_id) if self.watch_id else b""
        return _head(heads, base, self.revision) + wid + b"".join(self.blobs)


class EventBatch:
    """Events delivered together, with their serialized forms computed once and shared."""

    __slots__ = ("_bare", "_full", "events")

    def __init__(self, events: Sequence[Event]) -> None:
        self.events = events
        self._full: bytes | None = None
        self._bare: bytes | None = None

    def blob(self, prev_kv: bool) -> bytes:
        """The ``events`` field of a WatchResponse, with or without each event's prev_kv."""
        if prev_kv:
            if self._full is None:
                self._full = _encode_events(self.events, keep_prev=True)
            return self._full
        if self._bare is None:
            self._bare = _encode_events(self.events, keep_prev=False)
        return self._bare


_HEADER_TAG: Final = b"\x0a"  # WatchResponse.header: field 1, length-delimited
_WATCH_ID_TAG: Final = b"\x10"  # WatchResponse.watch_id: field 2, varint
_EVENT_TAG: Final = b"\x5a"  # WatchResponse.events: field 11, length-delimited


def _varint(n: int) -> bytes:
    n &= (1 << 64) - 1  # negative int64 values travel as ten-byte two's complement
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _encode_events(events: Sequence[Event], *, keep_prev: bool) -> bytes:
    parts = []
    for ev in events:
        if not keep_prev and ev.HasField("prev_kv"):
            bare = Event(type=ev.type)
            bare.kv.CopyFrom(ev.kv)
            body = bare.SerializeToString()
        else:
            body = ev.SerializeToString()
        parts.append(_EVENT_TAG)
        parts.append(_varint(len(body)))
        parts.append(body)
    return b"".join(parts)


def _head(cache: dict[int, bytes], base: ResponseHeader, revision: int) -> bytes:
    head = cache.get(revision)
    if head is None:
        header = ResponseHeader()
        header.CopyFrom(base)
        header.revision = revision
        body = header.SerializeToString()
        head = cache[revision] = _HEADER_TAG + _varint(len(body)) + body
    return head


def _nothing() -> None:
    pass


def _control(
    watch_id: int,
    revision: int,
    *,
    created: bool = False,
    canceled: bool = False,
    cancel_reason: str = "",
    compact_revision: int = 0,
) -> WatchResponse:
    resp = WatchResponse(
        watch_id=watch_id,
        created=created,
        canceled=canceled,
        cancel_reason=cancel_reason,
        compact_revision=compact_revision,
    )
    resp.header.revision = revision
    return resp


def _fragments(resp: WatchResponse, limit: int) -> list[WatchResponse]:
    """Split ``resp`` into responses under ``limit`` bytes, as etcd's sendFragments does.

    Every part but the last says ``fragment``; a single event larger than the limit still
    travels alone.
    """
    parts = []
    part = WatchResponse(watch_id=resp.watch_id, fragment=True)
    part.header.CopyFrom(resp.header)
    base = part.ByteSize()
    size = base
    for ev in resp.events:
        n = ev.ByteSize() + 5  # field tag and length prefix, generously
        if len(part.events) and size + n >= limit:
            parts.append(part)
            part = WatchResponse(watch_id=resp.watch_id, fragment=True)
            part.header.CopyFrom(resp.header)
            size = base
        part.events.append(ev)
        size += n
    part.fragment = False
    parts.append(part)
    return parts


# History reads of one catch-up pass: (key, range_end, next_rev, prev_kv) -> (events or
# None if compacted, revision covered, whether that reaches the head).
_Reads: TypeAlias = "dict[tuple[bytes, bytes, int, bool], tuple[EventBatch | None, int, bool]]"


class WatchHub:
    """Every watcher of this member, indexed for one-pass fan-out of each apply's events."""

    def __init__(
        self,
        store: MvccStore,
        *,
        max_pending: int = DEFAULT_MAX_PENDING,
        catch_up_events: int = DEFAULT_CATCH_UP_EVENTS,
        progress_interval: float = DEFAULT_PROGRESS_INTERVAL,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
    ) -> None:
        self.store = store
        self.max_pending = max_pending
        self.catch_up_events = catch_up_events
        self.progress_interval = progress_interval
        self.max_response_bytes = max_response_bytes
        self.revision = store.revision
        self._streams: dict[WatchStream, None] = {}
        self._keys: dict[bytes, dict[Watcher, None]] = {}
        self._ranges: dict[tuple[bytes, bytes], dict[Watcher, None]] = {}
        self._progress: dict[Watcher, None] = {}
        self._prev_kv_watchers = 0
        self._count = 0
        self._next_progress: float | None = None
        self._reads: _Reads = {}
        self._reads_stamp = (-1, -1)

    # ------------------------------------------------------------------ bookkeeping

    def open_stream(self, wake: Callable[[], None] | None = None) -> WatchStream:
        """A new client stream; ``wake`` is called whenever its queue gets new items."""
        stream = WatchStream(self, wake, self.max_pending)
        self._streams[stream] = None
        return stream

    @property
    def watcher_count(self) -> int:
        return self._count

    @property
    def needs_prev_kv(self) -> bool:
        """Whether some watcher asked for prev_kv (else the store may skip reading it)."""
        return self._prev_kv_watchers > 0

    def _added(self, w: Watcher) -> None:
        self._count += 1
        if w.prev_kv:
            self._prev_kv_watchers += 1
        if w.progress_notify:
            self._progress[w] = None

    def _removed(self, w: Watcher) -> None:
        self._count -= 1
        if w.prev_kv:
            self._prev_kv_watchers -= 1
        self._progress.pop(w, None)
        if w.synced:
            self._unindex(w)
        w.synced = False

    def _group(self, w: Watcher) -> dict[Watcher, None]:
        if w.end is None:
            return self._keys.setdefault(w.key, {})
        return self._ranges.setdefault((w.key, w.end), {})

    def _unindex(self, w: Watcher) -> None:
        if w.end is None:
            group = self._keys.get(w.key)
            if group is not None:
                group.pop(w, None)
                if not group:
                    del self._keys[w.key]
        else:
            span = (w.key, w.end)
            group = self._ranges.get(span)
            if group is not None:
                group.pop(w, None)
                if not group:
                    del self._ranges[span]

    def _sync(self, w: Watcher) -> None:
        w.synced = True
        w.stream.unsynced.pop(w, None)
        self._group(w)[w] = None

    # ------------------------------------------------------------------ live events

    def notify(self, events: Sequence[Event], revision: int) -> None:
        """Deliver the events of one apply batch (revision order) to every synced watcher.

        ``revision`` is the store revision after the batch; responses carry it as their
        header revision, since each receiving watcher has then seen everything up to it.
        """
        self.revision = revision
        if not events or not self._count:
            return
        touched: dict[WatchStream, None] = {}
        victims: list[tuple[Watcher, int]] = []
        keys = [ev.kv.key for ev in events]
        if self._keys:
            by_key: dict[bytes, list[Event]] = {}
            watched = self._keys
            for k, ev in zip(keys, events, strict=True):
                if k in watched:
                    by_key.setdefault(k, []).append(ev)
            for k, evs in by_key.items():
                self._fan_out(watched[k], evs, revision, touched, victims)
        if self._ranges:
            for (lo, hi), group in self._ranges.items():
                if hi:
                    evs = [ev for k, ev in zip(keys, events, strict=True) if lo <= k < hi]
                else:
                    evs = [ev for k, ev in zip(keys, events, strict=True) if lo <= k]
                if evs:
                    self._fan_out(group, evs, revision, touched, victims)
        for w, first in victims:
            self._unindex(w)
            w.synced = False
            if first > w.next_rev:
                w.next_rev = first
            w.stream.unsynced[w] = None
        for stream in touched:
            stream.wake()

    @staticmethod
    def _fan_out(
        group: Iterable[Watcher],
        evs: list[Event],
        revision: int,
        touched: dict[WatchStream, None],
        victims: list[tuple[Watcher, int]],
    ) -> None:
        first = evs[0].kv.mod_revision
        shared = EventBatch(evs)
        filtered: dict[tuple[bool, bool], EventBatch] = {}
        for w in group:
            mine = shared
            if w.no_put or w.no_delete:
                f = (w.no_put, w.no_delete)
                got = filtered.get(f)
                if got is None:
                    got = filtered[f] = EventBatch(w.filter(evs))
                mine = got
            if w.next_rev > first:
                mine = EventBatch([e for e in mine.events if e.kv.mod_revision >= w.next_rev])
            if not mine.events:
                continue
            stream = w.stream
            if stream.pending >= stream.max_pending:
                victims.append((w, mine.events[0].kv.mod_revision))
                continue
            stream.queue.append((w, mine, revision))
            stream.pending += 1
            w.next_rev = revision + 1
            w.sent = True
            touched[stream] = None

    # ------------------------------------------------------------------ catching up

    def catch_up(self, stream: WatchStream) -> None:
        """Replay history to the stream's unsynced watchers while its queue has room.

        Watchers that lagged together usually share interval and next revision (all victims
        of one apply do), so each distinct history read is made once per store revision and
        its events are serialized once for all of them, across streams.
        """
        store = self.store
        limit = self.catch_up_events
        # History below the head is immutable until the next apply or compaction, so reads
        # made at the same head are reused by later calls (other streams, later takes).
        stamp = (store.revision, store.compacted_revision)
        if stamp != self._reads_stamp:
            self._reads_stamp = stamp
            self._reads = {}
        reads = self._reads
        for w in list(stream.unsynced):
            if not stream.has_room:
                break
            spot = (w.key, w.range_end, w.next_rev, w.prev_kv)
            got = reads.get(spot)
            if got is None:
                head = store.revision
                try:
                    evs = store.events_since(
                        w.key, w.range_end, w.next_rev, prev_kv=w.prev_kv, max_events=limit
                    )
                except CompactedError:
                    got = reads[spot] = (None, head, False)
                else:
                    complete = len(evs) < limit
                    if complete:
                        upto = max(head, evs[-1].kv.mod_revision) if evs else head
                    else:
                        upto = evs[-1].kv.mod_revision
                    got = reads[spot] = (EventBatch(evs), upto, complete)
            batch, upto, complete = got
            if batch is None:
                stream._drop(w)
                stream.push(
                    _control(w.id, upto, canceled=True, compact_revision=store.compacted_revision)
                )
                continue
            mine = batch if not (w.no_put or w.no_delete) else EventBatch(w.filter(batch.events))
            if mine.events:
                stream.queue.append((w, mine, upto))
                stream.pending += 1
                w.sent = True
            # Never below where it was: a watcher with a future start revision (beyond a store
            # just restored from an older snapshot) reads nothing here and keeps its start.
            w.next_rev = max(w.next_rev, upto + 1)
            if complete:
                self._sync(w)
        if stream.progress_all_pending and not stream.unsynced:
            stream.progress_all_pending = False
            stream.queue.append(_control(PROGRESS_ALL_ID, self.revision))
        if stream.queue:
            stream.wake()

    def restored(self) -> None:
        """The store was replaced by a snapshot: every watcher catches up from history.

        Live events between the old and the new state never existed on this member, so
        watchers replay them from the restored history (or are canceled with the compact
        revision if it no longer holds them), as etcd's watchable store does on restore.
        """
        for stream in list(self._streams):
            for w in stream.watchers.values():
                if w.synced:
                    self._unindex(w)
                    w.synced = False
                    w.next_rev = max(w.next_rev, self.revision + 1)
                    stream.unsynced[w] = None
        self.revision = self.store.revision
        self._reads = {}
        for stream in list(self._streams):
            if stream.has_room:
                self.catch_up(stream)

    # ------------------------------------------------------------------ time

    def tick(self, now: float) -> None:
        """Periodic work: progress notifications and catching up lagging watchers.

        A ``progress_notify`` watcher that is synced and got no events during the last
        interval receives an empty response whose header revision it has fully seen, as
        etcd's progress notifications do.
        """
        for stream in list(self._streams):
            if stream.unsynced and stream.has_room:
                self.catch_up(stream)
        if self._next_progress is None:
            self._next_progress = now + self.progress_interval
            return
        if now < self._next_progress:
            return
        self._next_progress = now + self.progress_interval
        touched: dict[WatchStream, None] = {}
        for w in self._progress:
            if w.synced and not w.sent:
                w.stream.queue.append(_control(w.id, self.revision))
                touched[w.stream] = None
            w.sent = False
        for stream in touched:
            stream.wake()
