"""clientv3/concurrency's recipes, run inside the member for the Lock and Election services.

etcd serves Lock and Election with an in-process client running the ``concurrency`` package:
a *session* (a lease), a key ``<name>/<lease id in hex>`` created with that lease, and a
queue ordered by create revision. The holder (or leader) is the key with the lowest create
revision under ``<name>/``; every other waiter watches only the key just before its own
(``waitDeletes``), so a release wakes one waiter, not all of them. The same recipes are here,
with the member's store and watch hub in place of the client:

* Waits are driven by the watch hub (:class:`HubWatch`), never by polling.
* While waiting, a waiter also watches its own key. When its lease expires the key goes, and
  the wait ends at once with etcd's ``session expired`` (etcd notices only after the
  predecessors are gone). A lock or leadership is therefore never granted to a dead session.
* The queue is read from this member's applied state without a read barrier: the waiter's own
  key was proposed and applied here first, so every key created before it is in that state,
  and a deletion seen here is committed. A stale member only makes a waiter wait longer.

Errors: etcd's Lock and Election servers return the client's errors as plain Go errors, so
every failure reaches the caller with status ``UNKNOWN`` and etcd's message (e.g.
``etcdserver: requested lease not found``, ``election: not leader``); :func:`abort` does the
same.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Any, Final, NoReturn

import grpc

from flotilla.node.api.etcdpb import kv_pb2, rpc_pb2
from flotilla.node.api.handle import NodeHandle, check_size, propose
from flotilla.node.kv.watch import WatchStream

from ..kv.errors import CompactedError, EtcdError
from ..kv.validate import check_txn

log = logging.getLogger(__name__)

DEFAULT_SESSION_TTL: Final = 60
"""TTL of the lease granted for a request without one (concurrency's defaultSessionTTL)."""

_DELETE: Final = kv_pb2.Event.DELETE
_CREATE: Final = rpc_pb2.RangeRequest.CREATE
_ASCEND: Final = rpc_pb2.RangeRequest.ASCEND
_DESCEND: Final = rpc_pb2.RangeRequest.DESCEND


class SessionExpiredError(EtcdError):
    """The waiter's key (and so its lease) vanished before it got the lock or leadership."""

    message = "session expired"


class ElectionNotLeaderError(EtcdError):
    message = "election: not leader"


class ElectionNoLeaderError(EtcdError):
    message = "election: no leader"


class MissingLeaderKeyError(EtcdError):
    """Proclaim or Resign without the ``leader`` field."""

    message = '"leader" field must be provided'


class LostWatcherError(EtcdError):
    """The watch the wait relied on was canceled (its start revision was compacted)."""

    message = "lost watcher waiting for delete"


async def abort(context: Any, err: EtcdError) -> NoReturn:
    """End the RPC as etcd's Lock and Election servers do: UNKNOWN with the error's message."""
    await context.abort(grpc.StatusCode.UNKNOWN, err.message)
    raise AssertionError("context.abort returned")  # pragma: no cover


def prefix_end(prefix: bytes) -> bytes:
    """The range end covering every key that starts with ``prefix`` (clientv3's WithPrefix)."""
    end = bytearray(prefix)
    while end:
        if end[-1] < 0xFF:
            end[-1] += 1
            return bytes(end)
        end.pop()
    return b"\x00"


def session_key(prefix: bytes, lease: int) -> bytes:
    """``<prefix><lease id in hex>``, as Go's ``fmt.Sprintf("%s%x", pfx, lease)`` spells it."""
    return prefix + b"%x" % lease


def first_create(prefix: bytes) -> rpc_pb2.RangeRequest:
    """The key under ``prefix`` with the lowest create revision: the holder or leader."""
    return rpc_pb2.RangeRequest(
        key=prefix, range_end=prefix_end(prefix), sort_target=_CREATE, sort_order=_ASCEND, limit=1
    )


def _last_create_before(prefix: bytes, max_create_revision: int) -> rpc_pb2.RangeRequest:
    return rpc_pb2.RangeRequest(
        key=prefix,
        range_end=prefix_end(prefix),
        sort_target=_CREATE,
        sort_order=_DESCEND,
        limit=1,
        max_create_revision=max_create_revision,
    )


async def session_lease(handle: NodeHandle, lease: int) -> int:
    """The request's lease, or a new one of the default TTL if it names none (lease 0).

    As in etcd, the granted lease is not kept alive: the key it carries outlives the RPC
    for at most the session TTL unless the client releases it.
    """
    if lease:
        return lease
    resp: rpc_pb2.LeaseGrantResponse = await propose(
        handle, rpc_pb2.LeaseGrantRequest(TTL=DEFAULT_SESSION_TTL)
    )
    return int(resp.ID)


async def txn(handle: NodeHandle, request: rpc_pb2.TxnRequest) -> rpc_pb2.TxnResponse:
    """Validate and propose a txn, as etcd's KV server would for the in-process client."""
    check_txn(request, handle.store.max_txn_ops)
    check_size(request)
    resp: rpc_pb2.TxnResponse = await propose(handle, request)
    return resp


def create_if_absent(key: bytes, value: bytes, lease: int, prefix: bytes) -> rpc_pb2.TxnRequest:
    """Join the queue: put ``key`` if it does not exist, else read it; and read the holder."""
    return rpc_pb2.TxnRequest(
        compare=[
            rpc_pb2.Compare(
                key=key,
                target=rpc_pb2.Compare.CREATE,
                result=rpc_pb2.Compare.EQUAL,
                create_revision=0,
            )
        ],
        success=[
            rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=key, value=value, lease=lease)),
            rpc_pb2.RequestOp(request_range=first_create(prefix)),
        ],
        failure=[
            rpc_pb2.RequestOp(request_range=rpc_pb2.RangeRequest(key=key)),
            rpc_pb2.RequestOp(request_range=first_create(prefix)),
        ],
    )


def if_created_at(key: bytes, revision: int, then: rpc_pb2.RequestOp) -> rpc_pb2.TxnRequest:
    """``then`` only if ``key`` is still the incarnation created at ``revision``."""
    cmp = rpc_pb2.Compare(
        key=key,
        target=rpc_pb2.Compare.CREATE,
        result=rpc_pb2.Compare.EQUAL,
        create_revision=revision,
    )
    return rpc_pb2.TxnRequest(compare=[cmp], success=[then])


def delete_if_created_at(key: bytes, revision: int) -> rpc_pb2.TxnRequest:
    op = rpc_pb2.RequestOp(request_delete_range=rpc_pb2.DeleteRangeRequest(key=key))
    return if_created_at(key, revision, op)


class HubWatch:
    """A watch on this member's hub, read like clientv3's watch channel.

    It is one hub stream with one watcher per key; :meth:`next` returns the next response
    that carries events. A watcher canceled by the hub (its history was compacted) ends the
    wait with an error, as a closed watch channel ends etcd's.
    """

    def __init__(
        self,
        handle: NodeHandle,
        keys: list[bytes],
        start_revision: int,
        *,
        range_end: bytes = b"",
        deletes_only: bool = False,
    ) -> None:
        self._wake = asyncio.Event()
        self._stream: WatchStream = handle.watch_hub.open_stream(self._wake.set)
        self._ready: deque[rpc_pb2.WatchResponse] = deque()
        filters = [rpc_pb2.WatchCreateRequest.NOPUT] if deletes_only else []
        for key in keys:
            self._stream.create(
                rpc_pb2.WatchCreateRequest(
                    key=key, range_end=range_end, start_revision=start_revision, filters=filters
                )
            )

    async def next(self) -> rpc_pb2.WatchResponse:
        while not self._ready:
            self._wake.clear()
            for resp in self._stream.take():
                if resp.canceled:
                    if resp.compact_revision:
                        raise CompactedError()
                    raise LostWatcherError()
                if resp.events:
                    self._ready.append(resp)
            if not self._ready:
                await self._wake.wait()
        return self._ready.popleft()

    def close(self) -> None:
        self._stream.close()

    def __enter__(self) -> HubWatch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


async def wait_deletes(handle: NodeHandle, prefix: bytes, own_key: bytes, own_revision: int) -> int:
    """Wait until no key under ``prefix`` has a create revision below ``own_revision``.

    etcd's waitDeletes: watch the deletion of the last key created before ours, then look
    again (that key may have been released while an even older one still holds). Returns the
    store revision at which the queue ahead was seen empty. Raises SessionExpiredError as soon
    as ``own_key`` is gone or recreated (its lease expired or it was released meanwhile).
    """
    store = handle.store
    while True:
        # The watch starts just after the revision these reads saw, so a deletion applied
        # in between is replayed from history rather than missed.
        own = store.range(rpc_pb2.RangeRequest(key=own_key))
        if not own.kvs or own.kvs[0].create_revision != own_revision:
            raise SessionExpiredError()
        if own_revision <= 1:
            # Nothing precedes revision 1 (and max_create_revision 0 would mean no limit).
            return int(own.header.revision)
        ahead = store.range(_last_create_before(prefix, own_revision - 1))
        if not ahead.kvs:
            return int(ahead.header.revision)
        last = ahead.kvs[0].key
        with HubWatch(
            handle, [last, own_key], ahead.header.revision + 1, deletes_only=True
        ) as watch:
            resp = await watch.next()
        if any(ev.kv.key == own_key for ev in resp.events if ev.type == _DELETE):
            raise SessionExpiredError()


class Cleanup:
    """Releases queued keys of RPCs that ended early, after their handlers are gone.

    A client that disconnects while waiting cancels its handler; etcd then deletes the
    waiter's key with the client's own context, so the queue behind it does not wait for the
    lease to expire. The deletion is a guarded txn, so it never removes a newer incarnation.
    """

    def __init__(self, handle: NodeHandle) -> None:
        self._h = handle
        self._tasks: set[asyncio.Task[None]] = set()

    async def join(self, request: rpc_pb2.TxnRequest, key: bytes) -> rpc_pb2.TxnResponse:
        """Run the queue-joining txn; if the RPC is canceled meanwhile, undo what it created."""
        joining = asyncio.ensure_future(txn(self._h, request))
        try:
            return await asyncio.shield(joining)
        except asyncio.CancelledError:
            joining.add_done_callback(lambda done: self._undo_join(done, key))
            raise

    def _undo_join(self, done: asyncio.Future[rpc_pb2.TxnResponse], key: bytes) -> None:
        if done.cancelled() or done.exception() is not None:
            return
        resp = done.result()
        if resp.succeeded:
            self.release(key, resp.header.revision)

    def release(self, key: bytes, revision: int) -> None:
        task = asyncio.get_running_loop().create_task(self._release(key, revision))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _release(self, key: bytes, revision: int) -> None:
        try:
            await txn(self._h, delete_if_created_at(key, revision))
        except Exception as exc:  # the lease still bounds the key's life
            log.warning("could not release %r of a canceled waiter: %s", key, exc)
