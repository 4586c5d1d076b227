"""etcd's Watch service: one bidirectional stream carrying many watches.

The stream is two halves: a reader task turns create, cancel and progress requests into
calls on this stream's :class:`~flotilla.node.kv.watch.WatchStream`; the response generator
drains the stream's single queue whenever the hub wakes it. No task exists per watcher, and
the apply path never waits for a client: a slow client only makes its watchers lag and catch
up from history (see :mod:`flotilla.node.kv.watch`).

Responses leave as bytes the hub assembled (events serialized once per apply, shared by all
their watchers), so the method is registered with a pass-through serializer rather than the
generated one. As in etcd, the stream stays open after the client half-closes, until it
cancels the RPC.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc

from flotilla.node.api.etcdpb import rpc_pb2
from flotilla.node.api.handle import NodeHandle
from flotilla.node.kv.watch import WatchStream

SERVICE = "etcdserverpb.Watch"

TAKE_MAX = 256
"""Responses built per wake-up before yielding to the event loop again."""

CONTROL_BACKLOG = 1024
"""Unsent control responses (created, canceled, progress) after which the stream stops
reading requests until the client reads: the same back-pressure etcd's bounded control
channel gives, so a client cannot grow the queue without bound by not reading."""


class WatchService:
    def __init__(self, handle: NodeHandle) -> None:
        self._h = handle

    async def Watch(
        self, request_iterator: AsyncIterator[rpc_pb2.WatchRequest], context: Any
    ) -> AsyncIterator[bytes]:
        h = self._h
        wake = asyncio.Event()
        room = asyncio.Event()
        stream = h.watch_hub.open_stream(wake.set)
        reader = asyncio.create_task(_read(request_iterator, stream, wake, room))
        try:
            while True:
                wake.clear()
                batch = stream.take_encoded(TAKE_MAX, h.header())
                room.set()
                if batch:
                    for resp in batch:
                        yield resp
                    continue
                if reader.done() and not reader.cancelled() and reader.exception() is not None:
                    return
                await wake.wait()
        finally:
            reader.cancel()
            stream.close()


async def _read(
    requests: AsyncIterator[rpc_pb2.WatchRequest],
    stream: WatchStream,
    wake: asyncio.Event,
    room: asyncio.Event,
) -> None:
    try:
        async for req in requests:
            while len(stream.queue) - stream.pending > CONTROL_BACKLOG:
                room.clear()
                await room.wait()
            which = req.WhichOneof("request_union")
            if which == "create_request":
                stream.create(req.create_request)
            elif which == "cancel_request":
                stream.cancel(req.cancel_request.watch_id)
            elif which == "progress_request":
                stream.request_progress()
    finally:
        wake.set()


def _serialize(resp: bytes | rpc_pb2.WatchResponse) -> bytes:
    return resp if isinstance(resp, bytes) else resp.SerializeToString()


def add_to_server(server: Any, handle: NodeHandle) -> None:
    """Register the Watch service with its pass-through response serializer."""
    handlers = {
        "Watch": grpc.stream_stream_rpc_method_handler(
            WatchService(handle).Watch,
            request_deserializer=rpc_pb2.WatchRequest.FromString,
            response_serializer=_serialize,
        )
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    server.add_registered_method_handlers(SERVICE, handlers)
