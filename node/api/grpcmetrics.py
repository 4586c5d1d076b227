"""Counts of client gRPC calls by method and status code, as go-grpc-prometheus names them.

A server interceptor wraps each method's handler once (handlers are cached per method), and
each call costs two dictionary increments: the counters are plain integers, turned into
Prometheus families only when scraped (see ``flotilla.node.metrics``).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

# (grpc_type, grpc_service, grpc_method)
Method = tuple[str, str, str]


def _split(full: str) -> tuple[str, str]:
    """``/etcdserverpb.KV/Range`` -> (``etcdserverpb.KV``, ``Range``)."""
    _, service, method = [*full.split("/"), "", ""][:3]
    return service, method


def _code(context: Any, exc: BaseException | None) -> str:
    """The status a call ended with: what the handler set or aborted with; UNKNOWN if it raised
    anything else, as grpc itself answers; OK otherwise."""
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return str(code.name)
    if isinstance(code, int) and code != 0:
        return next((c.name for c in grpc.StatusCode if c.value[0] == code), "UNKNOWN")
    if exc is not None and not isinstance(exc, grpc.aio.AbortError):
        # The client went away (deadline, cancel): grpc cancels the handler's task.
        cancelled = isinstance(exc, asyncio.CancelledError | GeneratorExit)
        return "CANCELLED" if cancelled else "UNKNOWN"
    return "OK"


class GrpcCounters(grpc.aio.ServerInterceptor):  # type: ignore[misc]  # untyped upstream
    def __init__(self) -> None:
        self.started: Counter[Method] = Counter()
        self.handled: Counter[tuple[str, str, str, str]] = Counter()
        self._wrapped: dict[str, grpc.RpcMethodHandler] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        name: str = handler_call_details.method
        wrapped = self._wrapped.get(name)
        if wrapped is None:
            handler = await continuation(handler_call_details)
            if handler is None:
                return handler
            wrapped = self._wrap(name, handler)
            self._wrapped[name] = wrapped
        return wrapped

    def _wrap(self, name: str, h: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        service, method = _split(name)
        started, handled = self.started, self.handled
        if h.unary_unary is not None:
            inner = h.unary_unary
            key: Method = ("unary", service, method)

            async def unary(request: Any, context: Any) -> Any:
                started[key] += 1
                exc: BaseException | None = None
                try:
                    return await inner(request, context)
                except BaseException as e:
                    exc = e
                    raise
                finally:
                    handled[(*key, _code(context, exc))] += 1

            return grpc.unary_unary_rpc_method_handler(
                unary, h.request_deserializer, h.response_serializer
            )
        if h.stream_unary is not None:
            return h  # client streaming: none in etcd's API; left uncounted, not mis-wrapped
        stream_key: Method = (
            "bidi_stream" if h.stream_stream is not None else "server_stream",
            service,
            method,
        )
        inner_stream = h.stream_stream or h.unary_stream
        assert inner_stream is not None

        async def streaming(request: Any, context: Any) -> AsyncIterator[Any]:
            # Every streaming method of etcd's API is an async generator.
            started[stream_key] += 1
            exc: BaseException | None = None
            try:
                async for item in inner_stream(request, context):
                    yield item
            except BaseException as e:
                exc = e
                raise
            finally:
                handled[(*stream_key, _code(context, exc))] += 1

        make = (
            grpc.stream_stream_rpc_method_handler
            if h.stream_stream is not None
            else grpc.unary_stream_rpc_method_handler
        )
        return make(streaming, h.request_deserializer, h.response_serializer)
