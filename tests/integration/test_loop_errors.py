"""Background loops that meet an error (Redis away) go on: each error counted in
``quietwire_loop_errors``, logged once a minute per kind, not once a round."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
from quietwire.embedded.pki import Pki
from quietwire.protocols.sip.message import Request, Response
from quietwire.relay import service as relay_service
from quietwire.relay.service import RelayService
from quietwire.runtime.errorlog import LOOP_ERRORS
from quietwire.signaling import service as signaling_service
from quietwire.signaling.errorlog import ERRORS as sip_errors_counter
from quietwire.signaling.flows import Flow, FlowTable, StreamListener
from quietwire.signaling.service import SignalingService

from tests.conftest import free_port
from tests.integration.signaling_harness import replica_settings
from tests.integration.test_relay_kube import relay_settings
from tests.support.wait import eventually

ROUNDS = 5


def nowhere() -> str:
    """A Redis URL nothing listens on."""
    return f"redis://127.0.0.1:{free_port()}/0"


async def rounds_fail(
    loop: Callable[[], Coroutine[Any, Any, None]], where: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Run ``loop`` until ROUNDS of its rounds failed: all counted, one line logged."""
    counted = LOOP_ERRORS.labels(where, "ConnectionError")
    before = counted._value.get()
    with caplog.at_level(logging.ERROR):
        task = asyncio.create_task(loop())
        try:

            async def failed() -> bool:
                return counted._value.get() >= before + ROUNDS

            await eventually(failed, 20, f"{ROUNDS} failed rounds of {where}", interval=0.01)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    lines = [r for r in caplog.records if r.getMessage() == f"{where} failed"]
    assert len(lines) == 1, lines
    assert lines[0].__dict__["exception"] == "ConnectionError"


async def test_the_relay_heartbeat_counts_and_logs_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(relay_service, "HEARTBEAT_EVERY", 0.01)
    service = RelayService(relay_settings(nowhere()))
    try:
        await rounds_fail(service._heartbeat, "relay heartbeat", caplog)
    finally:
        await service.close()


async def test_the_signaling_heartbeat_counts_and_logs_once(
    pki: Pki, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(signaling_service, "HEARTBEAT_EVERY", 0.01)
    service = SignalingService(replica_settings(pki, nowhere()))
    try:
        await rounds_fail(service._heartbeat, "replica heartbeat", caplog)
    finally:
        await service.close()


async def test_a_failing_sip_handler_is_counted_and_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Whatever a connection's handler raises (a stranger may find a way): every one
    counted, one log line a minute per kind, and the connection goes on."""

    async def handler(flow: Flow, message: Request | Response) -> None:
        raise RuntimeError("handler bug")

    listener = StreamListener(FlowTable("r1"), handler, None)
    port = await listener.start("127.0.0.1", 0)
    counted = sip_errors_counter.labels("SIP handler", "RuntimeError")
    before = counted._value.get()
    options = (
        "OPTIONS sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:5060;branch=z9hG4bK{n}\r\n"
        "From: <sip:a@127.0.0.1>;tag=1\r\nTo: <sip:127.0.0.1>\r\nCall-ID: c{n}\r\n"
        "CSeq: {n} OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
    with caplog.at_level(logging.ERROR):
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for n in range(1, ROUNDS + 1):
                writer.write(options.format(n=n).encode())
            await writer.drain()

            async def handled() -> bool:
                return counted._value.get() >= before + ROUNDS

            await eventually(handled, 20, f"{ROUNDS} handler failures counted")
        finally:
            writer.close()
            await listener.close()
    lines = [r for r in caplog.records if r.getMessage() == "SIP handler failed"]
    assert len(lines) == 1, lines
