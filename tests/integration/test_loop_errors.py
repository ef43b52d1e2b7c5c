"""Background loops that meet an error (Redis away) go on: each error counted in
``quietwire_loop_errors``, logged once a minute per kind, not once a round."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
from quietwire.embedded.pki import Pki
from quietwire.relay import service as relay_service
from quietwire.relay.service import RelayService
from quietwire.runtime.errorlog import LOOP_ERRORS
from quietwire.signaling import service as signaling_service
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
