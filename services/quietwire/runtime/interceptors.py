"""gRPC interceptors: the call id travels in metadata and lands in contextvars.

A client interceptor copies :data:`call_id_var` into ``x-call-id`` metadata;
the server interceptor sets :data:`call_id_var` around the handler, so every
log line written while serving a call carries its id across services.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpc
from prometheus_client import Counter

from quietwire.runtime.context import CALL_ID_METADATA, CallId, call_id_var

RPCS = Counter("quietwire_grpc_server_requests", "gRPC requests received", ["method"])

Behavior = Callable[..., Any]

# grpc-stubs makes the interceptor bases generic; at run time they are not.
if TYPE_CHECKING:
    _ServerInterceptor = grpc.aio.ServerInterceptor[Any, Any]
    _UnaryUnaryClientInterceptor = grpc.aio.UnaryUnaryClientInterceptor[Any, Any]
    _UnaryStreamClientInterceptor = grpc.aio.UnaryStreamClientInterceptor[Any, Any]
else:
    _ServerInterceptor = grpc.aio.ServerInterceptor
    _UnaryUnaryClientInterceptor = grpc.aio.UnaryUnaryClientInterceptor
    _UnaryStreamClientInterceptor = grpc.aio.UnaryStreamClientInterceptor


def _with_call_id(behavior: Behavior, call_id: CallId) -> Behavior:
    if inspect.isasyncgenfunction(behavior):

        async def stream(
            request: Any, context: grpc.aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[Any]:
            token = call_id_var.set(call_id)
            try:
                async for item in behavior(request, context):
                    yield item
            finally:
                call_id_var.reset(token)

        return stream

    async def unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        token = call_id_var.set(call_id)
        try:
            return await behavior(request, context)
        finally:
            call_id_var.reset(token)

    return unary


class CallIdServerInterceptor(_ServerInterceptor):
    """Sets :data:`call_id_var` from ``x-call-id`` for the duration of a handler."""

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        handler = await continuation(handler_call_details)
        RPCS.labels(handler_call_details.method).inc()
        metadata = dict(handler_call_details.invocation_metadata or ())
        call_id = metadata.get(CALL_ID_METADATA)
        if handler is None or not isinstance(call_id, str) or not call_id:
            return handler
        kind, behavior = _behavior(handler)
        wrapped = _with_call_id(behavior, CallId(call_id))
        factory = getattr(grpc, f"{kind}_rpc_method_handler")
        handler_out: grpc.RpcMethodHandler[Any, Any] = factory(
            wrapped,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
        return handler_out


def _behavior(handler: grpc.RpcMethodHandler[Any, Any]) -> tuple[str, Behavior]:
    for kind in ("unary_unary", "unary_stream", "stream_unary", "stream_stream"):
        behavior = getattr(handler, kind)
        if behavior is not None:
            return kind, behavior
    raise ValueError("gRPC handler without behavior")


def _details_with_call_id(details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
    call_id = call_id_var.get()
    if call_id is None:
        return details
    metadata = grpc.aio.Metadata(*(details.metadata or ()))
    metadata[CALL_ID_METADATA] = call_id
    return grpc.aio.ClientCallDetails(
        details.method, details.timeout, metadata, details.credentials, details.wait_for_ready
    )


class CallIdClientInterceptor(
    _UnaryUnaryClientInterceptor,
    _UnaryStreamClientInterceptor,
):
    """Adds ``x-call-id`` from :data:`call_id_var` to outgoing RPCs."""

    async def intercept_unary_unary(
        self,
        continuation: Callable[..., Any],
        client_call_details: grpc.aio.ClientCallDetails,
        request: Any,
    ) -> Any:
        return await continuation(_details_with_call_id(client_call_details), request)

    async def intercept_unary_stream(
        self,
        continuation: Callable[..., Any],
        client_call_details: grpc.aio.ClientCallDetails,
        request: Any,
    ) -> Any:
        return await continuation(_details_with_call_id(client_call_details), request)
