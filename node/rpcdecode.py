"""Undecodable requests answered as etcd answers them, on every method we serve.

grpc.aio reports a request that its deserializer cannot parse as UNKNOWN with the Python
exception's text ("Unexpected <class 'DecodeError'>") on some call paths. etcd (grpc-go)
answers INTERNAL "grpc: error unmarshalling request: ...". This interceptor gives every
method that answer: the deserializer returns a marker instead of raising, and the handler
aborts on seeing it, before any of the service's code runs.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc


class _Undecodable:
    def __init__(self, error: Exception) -> None:
        self.message = f"grpc: error unmarshalling request: {error}"


def _safe(deserialize: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    def parse(raw: bytes) -> Any:
        try:
            return deserialize(raw)
        except Exception as exc:  # any parse failure is the client's, never ours
            return _Undecodable(exc)

    return parse


async def _refuse(context: Any, bad: _Undecodable) -> None:
    await context.abort(grpc.StatusCode.INTERNAL, bad.message)


def _checked_stream(requests: AsyncIterator[Any], context: Any) -> AsyncIterator[Any]:
    async def gen() -> AsyncIterator[Any]:
        async for r in requests:
            if isinstance(r, _Undecodable):
                await _refuse(context, r)
            yield r

    return gen()


def _unary_in(behavior: Callable[..., Any]) -> Callable[..., Any]:
    async def unary(request: Any, context: Any) -> Any:
        if isinstance(request, _Undecodable):
            await _refuse(context, request)
        return await behavior(request, context)

    return unary


def _unary_in_stream_out(behavior: Callable[..., Any]) -> Callable[..., Any]:
    # grpc.aio picks how to drive a handler by its kind (async generator or coroutine),
    # so the wrapper must be of the same kind as the service's method.
    if inspect.isasyncgenfunction(behavior):

        async def generate(request: Any, context: Any) -> AsyncIterator[Any]:
            if isinstance(request, _Undecodable):
                await _refuse(context, request)
            async for r in behavior(request, context):
                yield r

        return generate
    return _unary_in(behavior)


def _stream_in(behavior: Callable[..., Any]) -> Callable[..., Any]:
    if inspect.isasyncgenfunction(behavior):

        async def generate(requests: AsyncIterator[Any], context: Any) -> AsyncIterator[Any]:
            async for r in behavior(_checked_stream(requests, context), context):
                yield r

        return generate

    async def call(requests: AsyncIterator[Any], context: Any) -> Any:
        return await behavior(_checked_stream(requests, context), context)

    return call


class DecodeGuard(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Wraps each method's handler once (the registered handlers never change while the
    server runs), so the cost per call is one dictionary lookup."""

    def __init__(self) -> None:
        self._handlers: dict[str, grpc.RpcMethodHandler] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        cached = self._handlers.get(details.method)
        if cached is not None:
            return cached
        handler = await continuation(details)
        if handler is None or handler.request_deserializer is None:
            return handler
        wrapped = self._wrap(handler)
        self._handlers[details.method] = wrapped
        return wrapped

    def _wrap(self, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        parse = _safe(handler.request_deserializer)
        out = handler.response_serializer
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(_unary_in(handler.unary_unary), parse, out)
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                _unary_in_stream_out(handler.unary_stream), parse, out
            )
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(
                _stream_in(handler.stream_unary), parse, out
            )
        return grpc.stream_stream_rpc_method_handler(_stream_in(handler.stream_stream), parse, out)
