"""The service chassis in process: mutual TLS, health, call id across gRPC, signals."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from quietwire.embedded.pki import ensure_pki
from quietwire.keyagreement.settings import KeyAgreementSettings
from quietwire.runtime.channels import open_channel
from quietwire.runtime.context import CallId, call_id_var
from quietwire.runtime.health import LIVENESS, NOT_SERVING, SERVING, HealthMonitor, serving_status
from quietwire.runtime.service import _Signals, build_server
from quietwire.runtime.settings import SettingsError, load_settings
from quietwire.runtime.tls import TlsFiles

from tests.support.wait import eventually

WHOAMI = "/quietwire.test.v1.Test/WhoAmI"


def whoami_handler() -> grpc.GenericRpcHandler:
    """A method that answers with the call id it sees in its context."""

    async def whoami(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        return (call_id_var.get() or "").encode()

    return grpc.method_handlers_generic_handler(
        "quietwire.test.v1.Test",
        {"WhoAmI": grpc.unary_unary_rpc_method_handler(whoami)},
    )


@pytest.fixture
def tls(tmp_path: Path) -> TlsFiles:
    pki = ensure_pki(tmp_path / "pki", "127.0.0.1")
    return TlsFiles(pki.grpc_cert, pki.grpc_key, pki.ca)


@pytest.fixture
async def server(tls: TlsFiles) -> AsyncIterator[tuple[str, HealthServicer]]:
    settings = load_settings(
        KeyAgreementSettings,
        grpc_port=0,
        grpc_tls_cert=tls.cert,
        grpc_tls_key=tls.key,
        grpc_tls_ca=tls.ca,
    )
    srv, port = build_server(settings)
    health = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, srv)
    srv.add_generic_rpc_handlers([whoami_handler()])
    await srv.start()
    yield f"127.0.0.1:{port}", health
    await srv.stop(None)


async def test_call_id_crosses_grpc(server: tuple[str, HealthServicer], tls: TlsFiles) -> None:
    target, _ = server
    async with open_channel(target, tls) as channel:
        whoami = channel.unary_unary(WHOAMI)
        assert await whoami(b"", timeout=5) == b""
        token = call_id_var.set(CallId("3848276298220188511@atlanta.example.com"))
        try:
            assert await whoami(b"", timeout=5) == b"3848276298220188511@atlanta.example.com"
        finally:
            call_id_var.reset(token)


async def test_client_without_certificate_refused(
    server: tuple[str, HealthServicer], tls: TlsFiles
) -> None:
    target, _ = server
    no_client_cert = grpc.ssl_channel_credentials(root_certificates=tls.ca.read_bytes())
    async with grpc.aio.secure_channel(target, no_client_cert) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await channel.unary_unary(WHOAMI)(b"", timeout=5)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_client_trusting_another_ca_refused(
    server: tuple[str, HealthServicer], tmp_path: Path
) -> None:
    target, _ = server
    other = ensure_pki(tmp_path / "other", "127.0.0.1")
    async with open_channel(target, TlsFiles(other.grpc_cert, other.grpc_key, other.ca)) as channel:
        assert await serving_status(channel) != SERVING


async def test_readiness_follows_checks_liveness_does_not(
    server: tuple[str, HealthServicer], tls: TlsFiles
) -> None:
    target, health = server
    redis_up = True

    async def redis_check() -> bool:
        return redis_up

    monitor = HealthMonitor(health, ["quietwire.test.v1.Test"], {"redis": redis_check}, 0.05)
    async with open_channel(target, tls) as channel:

        async def reaches(status: int) -> bool:
            return await serving_status(channel) == status

        await monitor.start()
        assert await serving_status(channel) == SERVING
        assert await serving_status(channel, "quietwire.test.v1.Test") == SERVING
        redis_up = False
        await eventually(lambda: reaches(NOT_SERVING), 5, "NOT_SERVING once Redis is down")
        assert await serving_status(channel, LIVENESS) == SERVING
        redis_up = True
        await eventually(lambda: reaches(SERVING), 5, "SERVING once Redis is back")
        await monitor.stop()
        assert await serving_status(channel) == NOT_SERVING


async def test_port_in_use_is_a_settings_error(tls: TlsFiles) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        settings = load_settings(
            KeyAgreementSettings, grpc_port=busy.getsockname()[1], grpc_insecure=True
        )
        with pytest.raises(SettingsError, match="QW_GRPC_PORT"):
            build_server(settings)


async def test_second_signal_cuts_a_step_short() -> None:
    signals = _Signals()
    never = asyncio.Event()
    assert await signals.unless_forced(asyncio.sleep(0))
    signals.force.set()
    assert not await signals.unless_forced(never.wait())
