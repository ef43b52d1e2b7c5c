"""A relay process for tests, and asking a relay about one call's session."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
from quietwire.rpc.relay.v1 import relay_pb2, relay_pb2_grpc
from quietwire.runtime.streams import stream_id

from tests.conftest import free_port, quietwire_env, start_service, stop_process


@dataclass(frozen=True)
class RelayProcess:
    #: host:port of its gRPC server.
    address: str
    process: subprocess.Popen[str]


@contextmanager
def relay_process(redis_url: str, log: Path, **settings: str) -> Iterator[RelayProcess]:
    """``quietwire relay`` on loopback with 100 ports of its own (gRPC without TLS),
    its log in ``log``, ``settings`` added (``QW_RELAY_ID=...``); stopped (SIGTERM)
    on leaving unless it is gone already."""
    first = 2 * (free_port() // 2)
    env = quietwire_env(
        QW_REDIS_URL=redis_url,
        QW_GRPC_INSECURE="true",
        QW_GRPC_BIND="127.0.0.1",
        QW_METRICS_PORT="0",
        QW_RELAY_BIND="127.0.0.1",
        QW_RELAY_PORT_MIN=str(first),
        QW_RELAY_PORT_MAX=str(first + 99),
        QW_DRAIN_TIMEOUT="1",
        **settings,
    )
    with log.open("w") as stderr:
        relay = start_service("relay", env, stderr=stderr)
        try:
            yield RelayProcess(f"127.0.0.1:{relay.grpc_port}", relay.process)
        finally:
            stop_process(relay.process, 15)


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
