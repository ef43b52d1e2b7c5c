"""Asking a relay about one call's session, as keyagreement names it."""

from __future__ import annotations

import grpc
from quietwire.rpc.relay.v1 import relay_pb2, relay_pb2_grpc
from quietwire.runtime.streams import stream_id


async def relay_session(
    stub: relay_pb2_grpc.RelayAsyncStub, call_id: str, index: int = 0
) -> relay_pb2.QueryResponse | None:
    """The relay's session for the ``index``-th stream of a call (None: it has none)."""
    try:
        return await stub.Query(
            relay_pb2.QueryRequest(call_id=stream_id(call_id, index)), timeout=5
        )
    except grpc.aio.AioRpcError as exc:
        if exc.code() != grpc.StatusCode.NOT_FOUND:
            raise
        return None
